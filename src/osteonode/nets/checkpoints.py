"""Load a site's pretrained weights into the classification networks, whatever their naming.

A checkpoint may come from this package, from the reference implementation of the network
(facebookresearch ConvNeXt), from timm or from torchvision (ResNet-18 of either: both name its
tensors ``conv1``, ``bn1``, ``layer1`` ... ``layer4``, ``fc``, as :mod:`osteonode.nets.resnet` does). :func:`load_pretrained` reads it
without unpickling arbitrary objects, recognises the layout from its key names, renames the keys
to this package's, and then:

- drops a classification head whose shape differs from the model's (an ImageNet 1000-class head
  for a two-class model) and says so in the :class:`LoadReport`;
- adapts a 3-channel first convolution to a 1-channel model by summing over the input channels,
  which gives the same response as the RGB network on a grey image replicated into three channels
  (so the grey image should be normalised as the RGB network's channels were, e.g. with the mean
  of the ImageNet channel means and standard deviations);
- raises :class:`CheckpointError` naming missing, unexpected and mis-shaped keys when the file does
  not fit the model.
"""

from __future__ import annotations

import enum
import os
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from osteonode.nets.convnext import ConvNeXt
from osteonode.nets.darknet import DarkNet
from osteonode.nets.resnet import ResNet
from osteonode.nets.vgg_nonlocal import VGGNonLocal

__all__ = [
    "CheckpointError",
    "CheckpointLayout",
    "LoadReport",
    "load_pretrained",
    "read_state_dict",
]

log = structlog.get_logger(__name__)

#: File name suffixes read with safetensors and with ``torch.load(weights_only=True)``.
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt")
#: Keys under which training scripts commonly nest the state dict, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
#: How many key names an error message lists before summarising the rest as a count.
_KEYS_SHOWN = 12


class CheckpointError(Exception):
    """A checkpoint cannot be read or does not fit the model.

    Parameters
    ----------
    message : str
        What went wrong, for a person.
    missing : tuple[str, ...]
        Model keys the checkpoint does not provide.
    unexpected : tuple[str, ...]
        Checkpoint keys (after renaming) the model does not have.
    mismatched : tuple[str, ...]
        ``"key: checkpoint shape != model shape"`` for every tensor of the wrong shape.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: tuple[str, ...] = (),
        unexpected: tuple[str, ...] = (),
        mismatched: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


class CheckpointLayout(enum.Enum):
    """Naming scheme of a checkpoint's keys."""

    #: This package's names. For ConvNeXt they are the facebookresearch names (reported as
    #: FACEBOOK); for VGGNonLocal, torchvision's ``features.*`` plus ``non_local.*`` and ``head.*``.
    OSTEONODE = "osteonode"
    #: facebookresearch/ConvNeXt: ``downsample_layers.*``, ``stages.i.j.dwconv``, ``norm``,
    #: ``head``.
    FACEBOOK = "facebook"
    #: timm: ConvNeXt ``stem.*``, ``stages.i.downsample.*``, ``stages.i.blocks.j.conv_dw``,
    #: ``head.fc``; VGG ``features.*``, ``pre_logits.*``, ``head.fc``.
    TIMM = "timm"
    #: torchvision: ``features.*`` (ConvNeXt: ``block.k``, ``layer_scale``) and ``classifier.*``;
    #: ResNet ``conv1``, ``bn1``, ``layerN.*``, ``fc`` (timm's ResNet too; this package's names).
    TORCHVISION = "torchvision"


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did.

    Parameters
    ----------
    path : Path
        The checkpoint file.
    layout : CheckpointLayout
        Naming scheme recognised in the file.
    loaded_keys : tuple[str, ...]
        Model keys whose values now come from the checkpoint.
    head_loaded : bool
        Whether the classification head came from the checkpoint; if not it keeps its random
        initialisation and the model must be trained before its outputs mean anything.
    skipped_keys : tuple[str, ...]
        Checkpoint keys deliberately not loaded (a head of another shape, a head the model does not
        have), in the checkpoint's own names.
    initialised_keys : tuple[str, ...]
        Model keys left at their initial values (the head when skipped, a non-local block absent
        from an ImageNet VGG16).
    stem_adapted : bool
        Whether a 3-channel first convolution was summed into the model's 1-channel one.
    missing_keys : tuple[str, ...]
        Backbone keys the checkpoint lacked (only possible with ``strict_backbone=False``).
    unexpected_keys : tuple[str, ...]
        Checkpoint keys that fit nothing (only possible with ``strict_backbone=False``).
    """

    path: Path
    layout: CheckpointLayout
    loaded_keys: tuple[str, ...]
    head_loaded: bool
    skipped_keys: tuple[str, ...]
    initialised_keys: tuple[str, ...]
    stem_adapted: bool
    missing_keys: tuple[str, ...] = ()
    unexpected_keys: tuple[str, ...] = ()


# A renamer maps a checkpoint key to this package's name, or to None for a key of a foreign
# classification head that has no counterpart in the model (dropped and reported).
_Renamer = Callable[[str], str | None]


def _identity(key: str) -> str:
    return key


_TIMM_BLOCK = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)")
_TIMM_DOWNSAMPLE = re.compile(r"stages\.(\d+)\.downsample\.(\d+)\.(.+)")
_TIMM_BLOCK_PARTS = {"conv_dw.": "dwconv.", "mlp.fc1.": "pwconv1.", "mlp.fc2.": "pwconv2."}


def _rename_timm_convnext(key: str) -> str:
    if key.startswith("stem."):
        return "downsample_layers.0." + key.removeprefix("stem.")
    if match := _TIMM_DOWNSAMPLE.fullmatch(key):
        stage, index, rest = match.groups()
        return f"downsample_layers.{stage}.{index}.{rest}"
    if match := _TIMM_BLOCK.fullmatch(key):
        stage, block, rest = match.groups()
        for timm_part, own_part in _TIMM_BLOCK_PARTS.items():
            if rest.startswith(timm_part):
                rest = own_part + rest.removeprefix(timm_part)
                break
        return f"stages.{stage}.{block}.{rest}"
    if key.startswith("head.norm."):
        return "norm." + key.removeprefix("head.norm.")
    if key.startswith("head.fc."):
        return "head." + key.removeprefix("head.fc.")
    return key


_TORCHVISION_FEATURE = re.compile(r"features\.(\d+)\.(\d+)\.(.+)")
# Positions inside torchvision's CNBlock.block (1 and 6 are permutes, 4 the GELU).
_TORCHVISION_BLOCK_PARTS = {"block.0.": "dwconv.", "block.2.": "norm.", "block.3.": "pwconv1.",
                            "block.5.": "pwconv2.", "layer_scale": "gamma"}
_TORCHVISION_CLASSIFIER = {"classifier.0.": "norm.", "classifier.2.": "head."}


def _rename_torchvision_convnext(key: str) -> str:
    # torchvision interleaves the stages with the downsampling layers in one `features` sequence:
    # features.0 = stem, features.2i+1 = stage i, features.2i = downsampling before stage i.
    if match := _TORCHVISION_FEATURE.fullmatch(key):
        position, inner, rest = match.groups()
        position_number = int(position)
        if position_number % 2 == 0:
            return f"downsample_layers.{position_number // 2}.{inner}.{rest}"
        for torchvision_part, own_part in _TORCHVISION_BLOCK_PARTS.items():
            if rest.startswith(torchvision_part):
                rest = own_part + rest.removeprefix(torchvision_part)
                break
        return f"stages.{(position_number - 1) // 2}.{inner}.{rest}"
    for torchvision_part, own_part in _TORCHVISION_CLASSIFIER.items():
        if key.startswith(torchvision_part):
            return own_part + key.removeprefix(torchvision_part)
    return key


def _rename_torchvision_vgg(key: str) -> str | None:
    # fc6-fc8 of ImageNet VGG16; this network replaces them with global pooling and one logit.
    if key.startswith("classifier."):
        return None
    return key


def _rename_timm_vgg(key: str) -> str | None:
    # timm keeps torchvision's `features` indices and holds fc6-fc8 as `pre_logits` + `head.fc`.
    if key.startswith(("pre_logits.", "head.")):
        return None
    return key


def _detect_convnext(keys: set[str]) -> CheckpointLayout | None:
    if "downsample_layers.0.0.weight" in keys:
        return CheckpointLayout.FACEBOOK
    if "stem.0.weight" in keys:
        return CheckpointLayout.TIMM
    if "features.0.0.weight" in keys:
        return CheckpointLayout.TORCHVISION
    return None


def _detect_vgg(keys: set[str]) -> CheckpointLayout | None:
    if "pre_logits.fc1.weight" in keys:
        return CheckpointLayout.TIMM
    if any(key.startswith(("non_local.", "head.")) for key in keys):
        return CheckpointLayout.OSTEONODE
    if "features.0.weight" in keys:
        return CheckpointLayout.TORCHVISION
    return None


def _detect_resnet(keys: set[str]) -> CheckpointLayout | None:
    # torchvision and timm name ResNet's tensors alike; this package uses the same names.
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        return CheckpointLayout.TORCHVISION
    return None


def _detect_darknet(keys: set[str]) -> CheckpointLayout | None:
    if "stages.0.0.conv.weight" in keys:
        return CheckpointLayout.OSTEONODE
    return None


@dataclass(frozen=True)
class _Family:
    """How one network family names things, and which layouts map onto it."""

    stem_key: str
    head_prefix: str
    detect: Callable[[set[str]], CheckpointLayout | None]
    renamers: Mapping[CheckpointLayout, _Renamer]
    # Model keys a foreign (ImageNet) checkpoint cannot have; left at their initial values.
    foreign_optional_prefixes: tuple[str, ...] = ()
    native_layout: CheckpointLayout = CheckpointLayout.OSTEONODE


_CONVNEXT = _Family(
    stem_key="downsample_layers.0.0.weight",
    head_prefix="head.",
    detect=_detect_convnext,
    renamers={
        CheckpointLayout.FACEBOOK: _identity,
        CheckpointLayout.TIMM: _rename_timm_convnext,
        CheckpointLayout.TORCHVISION: _rename_torchvision_convnext,
    },
    native_layout=CheckpointLayout.FACEBOOK,
)
_VGG_NONLOCAL = _Family(
    stem_key="features.0.weight",
    head_prefix="head.",
    detect=_detect_vgg,
    renamers={
        CheckpointLayout.OSTEONODE: _identity,
        CheckpointLayout.TIMM: _rename_timm_vgg,
        CheckpointLayout.TORCHVISION: _rename_torchvision_vgg,
    },
    foreign_optional_prefixes=("non_local.",),
)


_RESNET = _Family(
    stem_key="conv1.weight",
    head_prefix="fc.",
    detect=_detect_resnet,
    renamers={CheckpointLayout.TORCHVISION: _identity},
    native_layout=CheckpointLayout.TORCHVISION,
)
# DarkNet-19 has no torchvision or timm counterpart: only this package's own names load.
_DARKNET = _Family(
    stem_key="stages.0.0.conv.weight",
    head_prefix="head.",
    detect=_detect_darknet,
    renamers={CheckpointLayout.OSTEONODE: _identity},
)
_FAMILIES: tuple[tuple[type[nn.Module], _Family], ...] = (
    (ConvNeXt, _CONVNEXT),
    (VGGNonLocal, _VGG_NONLOCAL),
    (ResNet, _RESNET),
    (DarkNet, _DARKNET),
)


def _family_of(model: nn.Module) -> _Family:
    for network_type, family in _FAMILIES:
        if isinstance(model, network_type):
            return family
    known = ", ".join(network_type.__name__ for network_type, _ in _FAMILIES)
    raise TypeError(f"model must be one of {known}, got {type(model).__name__}")


def _listed(label: str, keys: tuple[str, ...]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN])
    more = f", ... ({len(keys) - _KEYS_SHOWN} more)" if len(keys) > _KEYS_SHOWN else ""
    return f"{label} ({len(keys)}): {shown}{more}"


def _unwrap(content: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(content, Mapping):
        for wrapper in _WRAPPER_KEYS:
            if isinstance(content.get(wrapper), Mapping):
                content = content[wrapper]
                break
    if not isinstance(content, Mapping) or not content:
        raise CheckpointError(f"{path} holds no state dict (a mapping of names to tensors)")
    not_tensors = tuple(
        str(key) for key, value in content.items() if not isinstance(value, torch.Tensor)
    )
    if not_tensors:
        listed = _listed("entries that are not tensors", not_tensors)
        raise CheckpointError(f"{path} is not a plain state dict: {listed}")
    state = {str(key): value for key, value in content.items()}
    # nn.DataParallel / DistributedDataParallel save every name behind "module.".
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    # torch wraps the specific reason ("Unsupported global: ...") in several lines of advice,
    # part of which recommends weights_only=False; keep only the reason.
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip()
    return text.split("\n\n", 1)[0].split(". Please use", 1)[0].strip()


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors``, ``.pth`` or ``.pt`` file onto the CPU.

    ``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)``: only tensors and plain
    containers are accepted, never arbitrary pickled objects, so a file cannot run code on load.
    A state dict nested under ``state_dict``, ``model`` or ``model_state_dict`` is unwrapped and a
    ``module.`` prefix on every key is removed.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.

    Returns
    -------
    dict[str, torch.Tensor]
        Names to tensors, as stored.

    Raises
    ------
    TypeError
        If ``path`` is not a path.
    FileNotFoundError
        If the file does not exist.
    CheckpointError
        If the suffix is not supported, the file cannot be parsed, holds pickled objects other than
        tensors, or holds no state dict.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise CheckpointError(
            f"{path}: unsupported checkpoint suffix {suffix!r}; "
            f"expected one of {SAFETENSORS_SUFFIXES + TORCH_SUFFIXES}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if suffix in SAFETENSORS_SUFFIXES:
        try:
            content: object = load_file(str(path), device="cpu")
        except SafetensorError as error:
            raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error
    else:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"{path} was refused by torch.load(weights_only=True), which osteonode always uses "
                "for .pth/.pt files so that loading cannot run code: it is not a torch checkpoint, "
                "or it holds pickled Python objects other than tensors and plain containers "
                f"(torch: {_unpickler_reason(error)}). Re-save the bare state dict, or as "
                ".safetensors."
            ) from error
        except (RuntimeError, EOFError, ValueError) as error:
            raise CheckpointError(f"{path} is not a readable torch checkpoint: {error}") from error
    return _unwrap(content, path)


def _adapt_stem(tensor: torch.Tensor, model_shape: torch.Size) -> tuple[torch.Tensor, bool]:
    three_to_one = (
        tensor.ndim == 4
        and tensor.shape[1] == 3
        and model_shape[1] == 1
        and tensor.shape[0] == model_shape[0]
        and tensor.shape[2:] == model_shape[2:]
    )
    if three_to_one:
        return tensor.sum(dim=1, keepdim=True), True
    return tensor, False


def load_pretrained(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    strict_backbone: bool = True,
    require_head: bool = False,
) -> LoadReport:
    """Load a checkpoint into a ConvNeXt, VGGNonLocal, ResNet or DarkNet, renaming as needed.

    Parameters
    ----------
    model : ConvNeXt, VGGNonLocal, ResNet or DarkNet
        The network to fill; changed in place only if the checkpoint fits.
    path : str or os.PathLike
        ``.safetensors``, ``.pth`` or ``.pt`` file in the osteonode, facebookresearch, timm or
        torchvision layout (:class:`CheckpointLayout`; DarkNet: osteonode only).
    strict_backbone : bool
        Require every non-head model tensor to be in the checkpoint and every checkpoint tensor to
        fit the model (True, the default). With False, missing and unexpected keys are reported
        in the :class:`LoadReport` instead; tensors of the wrong shape are always an error.
    require_head : bool
        Require the classification head to load (for inference weights). Default False: an
        ImageNet head of another shape is skipped and reported.

    Returns
    -------
    LoadReport
        Layout, loaded, skipped and initialised keys, and whether the stem was adapted.

    Raises
    ------
    TypeError
        If ``model`` is not one of the supported networks or ``path`` is not a path.
    FileNotFoundError
        If the file does not exist.
    CheckpointError
        If the file cannot be read, its layout is not recognised, or it does not fit the model
        (the message and the exception's ``missing``, ``unexpected`` and ``mismatched`` attributes
        name the keys).
    """
    family = _family_of(model)
    source = read_state_dict(path)
    path = Path(path)
    model_state = model.state_dict()
    model_keys = set(model_state)

    detected = family.detect(set(source))
    layout = detected if detected is not None else family.native_layout
    rename = family.renamers[layout]
    foreign = layout is not family.native_layout

    renamed: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    skipped: list[str] = []
    for key, tensor in source.items():
        own_key = rename(key)
        if own_key is None:
            skipped.append(key)
            continue
        if own_key.endswith(".gamma") and tensor.ndim == 3:
            tensor = tensor.flatten()  # torchvision keeps layer scale as (C, 1, 1)
        renamed[own_key] = tensor
        origin[own_key] = key

    stem_adapted = False
    if family.stem_key in renamed:
        renamed[family.stem_key], stem_adapted = _adapt_stem(
            renamed[family.stem_key], model_state[family.stem_key].shape
        )

    to_load: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for own_key, tensor in renamed.items():
        if own_key not in model_keys:
            continue
        expected = model_state[own_key].shape
        if tensor.shape == expected:
            to_load[own_key] = tensor
        elif own_key.startswith(family.head_prefix):
            skipped.append(origin[own_key])
        else:
            mismatched.append(f"{own_key}: {tuple(tensor.shape)} != {tuple(expected)}")

    def may_stay_initialised(key: str) -> bool:
        return (
            key.startswith(family.head_prefix)
            or key.endswith("num_batches_tracked")  # absent from checkpoints older than torch 0.4.1
            or (foreign and key.startswith(family.foreign_optional_prefixes))
        )

    unfilled = sorted(model_keys - set(to_load))
    missing = tuple(key for key in unfilled if not may_stay_initialised(key))
    initialised = tuple(key for key in unfilled if may_stay_initialised(key))
    unexpected = tuple(sorted(origin[key] for key in renamed if key not in model_keys))
    head_keys = [key for key in model_keys if key.startswith(family.head_prefix)]
    head_loaded = all(key in to_load for key in head_keys)

    problems = [f"{path} does not fit {type(model).__name__} (checkpoint layout: "
                f"{layout.value if detected is not None else 'not recognised'})"]
    if mismatched:
        problems.append(_listed("tensors of the wrong shape", tuple(mismatched)))
    if (strict_backbone or detected is None) and missing:
        problems.append(_listed("missing keys", missing))
    if (strict_backbone or detected is None) and unexpected:
        problems.append(_listed("unexpected keys", unexpected))
    if require_head and not head_loaded:
        problems.append(_listed("classification head not loaded", tuple(sorted(head_keys))))
    if len(problems) > 1:
        raise CheckpointError(
            "; ".join(problems),
            missing=missing,
            unexpected=unexpected,
            mismatched=tuple(mismatched),
        )

    model.load_state_dict(to_load, strict=False)

    report = LoadReport(
        path=path,
        layout=layout,
        loaded_keys=tuple(sorted(to_load)),
        head_loaded=head_loaded,
        skipped_keys=tuple(sorted(skipped)),
        initialised_keys=initialised,
        stem_adapted=stem_adapted,
        missing_keys=missing,
        unexpected_keys=unexpected,
    )
    log.info(
        "checkpoint_loaded",
        path=str(path),
        layout=layout.value,
        loaded=len(report.loaded_keys),
        head_loaded=head_loaded,
        skipped=list(report.skipped_keys),
        initialised=len(initialised),
        stem_adapted=stem_adapted,
        missing=len(missing),
        unexpected=len(unexpected),
    )
    return report
