"""How the models run on this machine (``[inference]``): threads, bfloat16, memory layout, compilation.

Threads: PyTorch gives every thread that runs a model a team of intra-op threads, by default one per
core. Two workers with a full team each put twice as many busy threads as cores on the machine, and
OpenMP threads that spin-wait for each other then cost far more than they save (up to 10x slower
under load). The node therefore shares the cores among its workers: ``threads_per_worker`` (0: the
cores divided by the workers, at least one).

Each loaded model gets an :class:`InferencePlan`, decided once from the settings, its card and the
hardware (:func:`prepare_model`):

* bfloat16: where the hardware computes in bfloat16 natively (a CUDA device, or a CPU with AMX or
  AVX512-BF16), autocast runs convolutions and matrix products in bfloat16, with the weights kept
  in float32, at about twice the speed for the full-size networks. Under ``auto`` a model runs so
  only when its card records that its results agree with float32 within ``bfloat16_tolerance``
  (``[metrics] bfloat16_max_abs_difference``, written by ``osteonode models verify-precision``).
  On a CPU without native bfloat16, autocast is emulated and slower, so ``auto`` stays in float32.
* channels-last: networks of plain convolutions run faster with NHWC tensors (oneDNN's native
  layout); ConvNeXt, whose blocks permute to NHWC and back themselves, runs slower. ``auto`` uses
  it for the architectures of :data:`CHANNELS_LAST_ARCHITECTURES`.
* compilation: ``torch.compile`` of every network, when asked for. Where it is unavailable (no C++
  compiler for inductor, an unsupported Python) the node logs why and runs the networks as they are;
  a network that fails to compile later falls back to eager execution as well.

Gradients: the passes that need none (detectors, locators, the regression pass) run under
``torch.inference_mode`` in the pipelines themselves; Grad-CAM needs autograd for its one backward
pass, so the classifiers' single forward pass, which gives the probability and the heat-map, does
not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch
from torch import nn

from osteonode.config import BFloat16Autocast, ChannelsLast, InferenceSettings
from osteonode.nets import (
    DarkNet,
    FemurLocator,
    ResNet,
    VertebraCropNet,
    VertebraKeypointNet,
    VGGNonLocal,
)
from osteonode.zoo import LoadedModel, ModelCard

__all__ = [
    "BFLOAT16_METRIC",
    "CHANNELS_LAST_ARCHITECTURES",
    "InferencePlan",
    "bfloat16_decision",
    "compilation_unavailable",
    "cpu_has_native_bfloat16",
    "native_bfloat16",
    "prepare_model",
    "share_cores",
    "uses_channels_last",
    "worker_threads",
]

log = structlog.get_logger(__name__)

#: The device of a plan that names none.
CPU = torch.device("cpu")
#: CPU flags (Linux ``/proc/cpuinfo``) that mean bfloat16 arithmetic in hardware.
_NATIVE_BFLOAT16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
#: The model card metric that says how far the model's results in bfloat16 are from float32.
BFLOAT16_METRIC = "bfloat16_max_abs_difference"
#: Network classes that ``bench/inference.py`` measured faster with channels-last tensors on CPU
#: (2 cores with AMX; full-size VGG16-NL at 224 px 1.83 -> 0.80 s float32, 1.85 -> 0.35 s bfloat16).
#: ConvNeXt is not among them: ConvNeXt-S at 512 px went 4.1 -> 6.5 s (float32), 2.7 -> 3.2 s (bf16).
CHANNELS_LAST_ARCHITECTURES: tuple[type[nn.Module], ...] = (
    VGGNonLocal,
    ResNet,
    DarkNet,
    VertebraKeypointNet,
    VertebraCropNet,
    FemurLocator,
)


def worker_threads(settings: InferenceSettings, workers: int, cores: int | None = None) -> int:
    """Intra-op threads each worker runs its models with.

    Parameters
    ----------
    settings
        ``[inference]``.
    workers
        Worker threads of this process that may run a model at the same time.
    cores
        CPU cores this process may use; those of its affinity mask when None.

    Returns
    -------
    int
        ``threads_per_worker`` when set, else ``cores // workers``, at least 1.
    """
    if not isinstance(settings, InferenceSettings):
        raise TypeError(f"settings must be InferenceSettings, not {type(settings).__name__}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if settings.threads_per_worker:
        return settings.threads_per_worker
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)


def share_cores(settings: InferenceSettings, workers: int) -> int:
    """Set this process's intra-op threads so that its workers share the cores; returns the count.

    PyTorch keeps one setting per process, which each thread takes on when it first runs a model.
    """
    threads = worker_threads(settings, workers)
    torch.set_num_threads(threads)
    return threads


def cpu_has_native_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes in bfloat16 in hardware (AMX or AVX512-BF16); False when unknown."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return not _NATIVE_BFLOAT16_FLAGS.isdisjoint(line.partition(":")[2].split())
    return False


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (a CUDA GPU, or a CPU with AMX/AVX512-BF16)."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bfloat16())


@dataclass(frozen=True)
class InferencePlan:
    """How one model runs: on which device, in which arithmetic, layout and compilation.

    Parameters
    ----------
    device
        Where the model's networks are.
    bfloat16
        Run the pipeline inside bfloat16 autocast.
    bfloat16_reason
        Why (not), for the log: the setting, the card's record, the hardware.
    channels_last
        Roles of the networks converted to channels-last.
    compiled
        Roles of the networks compiled with ``torch.compile``.
    """

    device: torch.device = CPU
    bfloat16: bool = False
    bfloat16_reason: str = "float32 by default"
    channels_last: tuple[str, ...] = ()
    compiled: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.device, torch.device):
            raise TypeError(f"device must be a torch.device, not {type(self.device).__name__}")

    @contextlib.contextmanager
    def autocast(self) -> Iterator[bool]:
        """Run a pipeline inside: bfloat16 autocast when the plan says so.

        Yields
        ------
        bool
            Whether bfloat16 autocast is on.
        """
        if not self.bfloat16:
            yield False
            return
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
            yield True

    def describe(self) -> dict[str, object]:
        """The plan as log fields."""
        return {
            "device": str(self.device),
            "bfloat16": self.bfloat16,
            "bfloat16_reason": self.bfloat16_reason,
            "channels_last": list(self.channels_last),
            "compiled": list(self.compiled),
        }


def bfloat16_decision(settings: InferenceSettings, card: ModelCard, device: torch.device) -> tuple[bool, str]:
    """Whether a model runs in bfloat16 autocast on ``device``, and why (not).

    Under ``auto``: only where the hardware computes bfloat16 natively and the card records an
    agreement with float32 within ``bfloat16_tolerance``.
    """
    if settings.bfloat16_autocast is BFloat16Autocast.OFF:
        return False, "bfloat16_autocast is off"
    if settings.bfloat16_autocast is BFloat16Autocast.ON:
        return True, "bfloat16_autocast is on"
    if not native_bfloat16(device):
        return False, f"{device.type} without native bfloat16 (autocast would be slower)"
    recorded = card.metrics.get(BFLOAT16_METRIC)
    if recorded is None:
        return False, f"the model card records no {BFLOAT16_METRIC} (osteonode models verify-precision)"
    if recorded > settings.bfloat16_tolerance:
        return False, f"the card records {recorded:.2g} from float32, over the tolerance {settings.bfloat16_tolerance:g}"
    return True, f"the card records {recorded:.2g} from float32, within {settings.bfloat16_tolerance:g}"


def uses_channels_last(settings: InferenceSettings, network: nn.Module) -> bool:
    """Whether ``network`` runs with channels-last tensors under ``settings``."""
    if settings.channels_last is ChannelsLast.AUTO:
        return isinstance(network, CHANNELS_LAST_ARCHITECTURES)
    return settings.channels_last is ChannelsLast.ON


def compilation_unavailable() -> str | None:
    """Why ``torch.compile`` cannot run here (None when it can)."""
    try:
        import torch._dynamo as dynamo
        import torch._inductor.config as inductor
    except ImportError as error:  # a build without the compiler stack
        return f"torch.compile is not part of this PyTorch: {error}"
    if not dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python version"
    compiler = inductor.cpp.cxx[-1] if isinstance(inductor.cpp.cxx, tuple) else inductor.cpp.cxx
    if shutil.which(str(compiler)) is None:
        return f"no C++ compiler ({compiler}) for torch.compile's CPU code"
    return None


def prepare_model(model: LoadedModel, settings: InferenceSettings) -> InferencePlan:
    """Apply ``[inference]`` to a loaded model's networks (in place), and say how to run it.

    Parameters
    ----------
    model
        The model as :func:`osteonode.zoo.load_model` gave it; its networks are converted to
        channels-last or compiled where the settings say so.
    settings
        ``[inference]``.

    Returns
    -------
    InferencePlan
        How the pipeline that runs the model is to be run (:meth:`InferencePlan.autocast`).
    """
    if not isinstance(model, LoadedModel):
        raise TypeError(f"model must be a LoadedModel, not {type(model).__name__}")
    if not isinstance(settings, InferenceSettings):
        raise TypeError(f"settings must be InferenceSettings, not {type(settings).__name__}")
    bfloat16, reason = bfloat16_decision(settings, model.card, model.device)
    channels_last = tuple(
        role for role, network in model.networks.items() if uses_channels_last(settings, network)
    )
    for role in channels_last:
        model.networks[role].to(memory_format=torch.channels_last)
    compiled: tuple[str, ...] = ()
    if settings.compile:
        unavailable = compilation_unavailable()
        if unavailable is not None:
            log.warning("compile_unavailable", model=model.card.name, reason=unavailable,
                        hint="the networks run uncompiled; set [inference] compile = false")
        else:
            import torch._dynamo as dynamo

            # A network that fails to compile when it first runs falls back to eager execution
            # (with dynamo's own warning) instead of failing the job.
            dynamo.config.suppress_errors = True
            for network in model.networks.values():
                network.compile()
            compiled = tuple(model.networks)
    return InferencePlan(
        device=model.device, bfloat16=bfloat16, bfloat16_reason=reason,
        channels_last=channels_last, compiled=compiled,
    )
