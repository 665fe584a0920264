"""Models on disk: a folder per model with its card (``model.toml``) and safetensors weights.

A model card says what the model is (name, version, pipeline, architecture of each network and its
options), how it was trained (data, synthetic or not), what it may be used for (``diagnostic_use``),
which parameters it runs with, and the SHA-256 of every weights file. Weights load only from
safetensors, never from pickle, and only after their checksum matches the card: a site's model
folder copied with a truncated file, or edited after validation, does not run.

Layout::

    models/<name>/model.toml
    models/<name>/<role>.safetensors      one file per network (e.g. detector, regressor)
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated

import tomli_w
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from osteonode.bone import Sex
from osteonode.config import describe_validation_error
from osteonode.header import canonical_view
from osteonode.imaging.transforms import ClassifierTransform
from osteonode.nets import ARCHITECTURES, build_network
from osteonode.pipelines.base import Category, FindingSite, Method, ModelIdentity, RegionKind

__all__ = [
    "CARD_FILE",
    "ClassifierSpec",
    "ClassifierStage",
    "LoadedModel",
    "ModelCard",
    "ModelError",
    "NetworkEntry",
    "file_sha256",
    "list_models",
    "load_model",
    "pick_device",
    "read_model_card",
    "record_metrics",
    "save_model",
]

#: The model card's file name inside a model folder.
CARD_FILE = "model.toml"

ParameterValue = str | int | float | bool


class ModelError(ValueError):
    """A model folder that cannot be used: bad card, missing file, checksum or shape mismatch."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkEntry(_Strict):
    """One network of a model: its role, how to build it, and its weights file."""

    role: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$")
    architecture: str = Field(min_length=1)
    options: dict[str, ParameterValue | list[int]] = Field(default_factory=dict)
    weights: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.safetensors$")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, description="Filled in by save_model; a card without it does not load."
    )


class ClassifierStage(_Strict):
    """One two-class decision of a classifier model (``[[classifier.stages]]``).

    The stage's network gives two logits (absent, present); its softmax probability of *present* at
    or above ``threshold`` answers ``positive``. Below it, the next stage runs, or, for the last
    stage, the answer is ``negative``.
    """

    network: str = Field(min_length=1, description="Role of the stage's network in the card.")
    name: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="The stage's key in [pipelines.<name>].thresholds and in the results'"
        " parameters; the network's role when omitted.",
    )
    finding: str = Field(
        min_length=1, max_length=64, description="Name of the stage's finding, e.g. 'Osteoporosis'."
    )
    positive: Category
    negative: Category | None = Field(
        default=None, description="The answer below the last stage's threshold; only on the last stage."
    )
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)

    @property
    def key(self) -> str:
        """The stage's name, or its network's role."""
        return self.name or self.network

    @property
    def heatmap_meaning(self) -> str:
        """What this stage's heat-map shows, for the Secondary Capture's legend."""
        answer = self.positive.value.replace("_", " ")
        return f"evidence of {answer} (Grad-CAM of {self.finding!r})"


class ClassifierSpec(_Strict):
    """How the generic classifier pipeline runs a model (``[classifier]`` of the card).

    Everything a two-class (or staged two-class) screening method needs that is not a network:
    the paper's preprocessing by name, the per-channel normalisation that follows it, the stages
    and their cut-offs, where the finding is, and which films the method is meant for.
    """

    finding_site: FindingSite
    transform: ClassifierTransform
    mean: list[float] = Field(default_factory=lambda: [0.0], min_length=1, max_length=3)
    std: list[float] = Field(default_factory=lambda: [1.0], min_length=1, max_length=3)
    stages: list[ClassifierStage] = Field(min_length=1)
    views: list[str] = Field(
        default_factory=list,
        description="Views the method reads (empty: any); a film with another recorded view is not"
        " evaluable. View Position values; LL and RL are LATERAL.",
    )
    preferred_views: list[str] = Field(
        default_factory=list,
        description="The views the method was made for, among ``views``: a film of another readable"
        " view is outside the intended use (analysed with a note, or skipped by policy).",
    )
    min_age_years: int | None = Field(default=None, ge=0, le=150)
    sexes: list[Sex] = Field(
        default_factory=list, description="The patient sexes the method is for (empty: any)."
    )
    population: str = Field(default="", description="Who the method is for, in the reader's words.")
    regions: RegionKind = Field(
        default=RegionKind.WHOLE_FILM,
        description="What each input is: the whole film, or the regions a locator network finds"
        " (femur_sides: each proximal femur, per side).",
    )
    locator: str | None = Field(
        default=None, description="Role of the network that finds the regions (not whole_film)."
    )
    locator_input_size: tuple[int, int] | None = Field(
        default=None, description="(rows, columns) the locator sees, multiples of 32 (not whole_film)."
    )

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: list[float]) -> list[float]:
        if any(value <= 0 for value in std):
            raise ValueError(f"std values must be positive, got {std}")
        return std

    @field_validator("views", "preferred_views")
    @classmethod
    def _canonical_views(cls, views: list[str]) -> list[str]:
        return list(dict.fromkeys(canonical_view(view) for view in views))

    @field_validator("sexes")
    @classmethod
    def _known_sexes(cls, sexes: list[Sex]) -> list[Sex]:
        if Sex.UNKNOWN in sexes:
            raise ValueError("sexes name who the method is for: F, M or O, not 'unknown'")
        return list(dict.fromkeys(sexes))

    @model_validator(mode="after")
    def _regions_have_their_locator(self) -> ClassifierSpec:
        located = self.locator is not None or self.locator_input_size is not None
        if self.regions is RegionKind.WHOLE_FILM:
            if located:
                raise ValueError("a whole_film classifier takes no locator or locator_input_size")
            return self
        if self.locator is None or self.locator_input_size is None:
            raise ValueError(f"regions {self.regions.value!r} need a locator and its locator_input_size")
        if any(n < 32 or n % 32 for n in self.locator_input_size):
            raise ValueError(f"locator_input_size must be multiples of 32, got {self.locator_input_size}")
        if self.locator in {stage.network for stage in self.stages}:
            raise ValueError(f"the locator {self.locator!r} cannot also be a stage's network")
        return self

    @model_validator(mode="after")
    def _stages_end_in_an_answer(self) -> ClassifierSpec:
        unreadable = set(self.preferred_views) - set(self.views) if self.views else set()
        if unreadable:
            raise ValueError(f"preferred_views {sorted(unreadable)} are not among the views it reads")
        *leading, last = self.stages
        if last.negative is None:
            raise ValueError("the last stage needs a 'negative' answer")
        for stage in leading:
            if stage.negative is not None:
                raise ValueError(
                    f"stage {stage.network!r} is not the last: below its threshold the next stage"
                    " runs, so it takes no 'negative' answer"
                )
        networks = [stage.network for stage in self.stages]
        if len(set(networks)) != len(networks):
            raise ValueError(f"each stage needs its own network, got {networks}")
        keys = [stage.key for stage in self.stages]
        if len(set(keys)) != len(keys):
            raise ValueError(f"each stage needs its own name, got {keys}")
        return self


class ModelCard(_Strict):
    """The contents of ``model.toml``."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    pipeline: Method = Field(description="The pipeline implementation that runs this model.")
    description: str = ""
    intended_use: str = Field(min_length=1)
    training_data: str = Field(min_length=1)
    synthetic: bool
    diagnostic_use: bool = False
    created: date | None = None
    input_size: tuple[int, int] = Field(description="(rows, columns) the networks see.")
    normalisation: str = Field(min_length=1)
    calibration: str | None = Field(default=None, description="DXA manufacturer of BMD outputs.")
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    training: dict[str, ParameterValue] = Field(
        default_factory=dict,
        description="How the networks were trained (augmentation, distillation, proxy-label"
        " counts); unlike parameters, not carried into results.",
    )
    networks: list[NetworkEntry] = Field(min_length=1)
    classifier: ClassifierSpec | None = Field(
        default=None, description="Required by, and only for, the generic classifier pipeline."
    )

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 8:
            raise ValueError("input_size must be at least 8 x 8")
        return size

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        roles = [network.role for network in self.networks]
        if len(set(roles)) != len(roles):
            raise ValueError(f"network roles must be unique, got {roles}")
        if self.synthetic and self.diagnostic_use:
            raise ValueError("a model trained on synthetic data cannot allow diagnostic use")
        if (self.pipeline is Method.CLASSIFIER) != (self.classifier is not None):
            raise ValueError("a [classifier] section is required for, and only for, pipeline 'classifier'")
        if self.classifier is not None:
            named = {stage.network for stage in self.classifier.stages} | {self.classifier.locator}
            unknown = named - {None} - set(roles)
            if unknown:
                raise ValueError(f"the classifier names networks the card lacks: {sorted(unknown)}")
        return self

    def network(self, role: str) -> NetworkEntry:
        """The entry of the network with ``role``."""
        for network in self.networks:
            if network.role == role:
                return network
        raise ModelError(f"model {self.name!r} has no {role!r} network")

    def identity(self) -> ModelIdentity:
        """The model as results and reports name it."""
        architecture = " + ".join(f"{n.role}: {n.architecture}" for n in self.networks)
        parameters = tuple((key, str(value)) for key, value in sorted(self.parameters.items()))
        if self.calibration:
            parameters = (("calibration", self.calibration), *parameters)
        return ModelIdentity(
            name=self.name,
            version=self.version,
            architecture=architecture,
            synthetic=self.synthetic,
            diagnostic_use=self.diagnostic_use,
            parameters=parameters,
        )


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready to run: its card, folder, device and networks in eval mode."""

    card: ModelCard
    directory: Path
    device: torch.device
    networks: Mapping[str, nn.Module]

    def __getitem__(self, role: str) -> nn.Module:
        try:
            return self.networks[role]
        except KeyError:
            raise ModelError(f"model {self.card.name!r} has no {role!r} network") from None


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_model_card(directory: Path | str) -> ModelCard:
    """Read and validate ``<directory>/model.toml``.

    Raises
    ------
    ModelError
        The card is missing, not TOML, or invalid (every problem listed with its key).
    """
    path = Path(directory) / CARD_FILE
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as error:
        raise ModelError(f"cannot read model card {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ModelError(f"model card {path} is not valid TOML: {error}") from None
    try:
        return ModelCard.model_validate(data)
    except ValidationError as error:
        problems = "\n".join(f"  - {describe_validation_error(e)}" for e in error.errors())
        raise ModelError(f"invalid model card {path}:\n{problems}") from None


def pick_device(preference: str = "auto") -> torch.device:
    """The torch device to run on: ``auto`` takes a GPU when one is present.

    Raises
    ------
    ModelError
        A CUDA device was asked for and none is available.
    """
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {preference!r} requested but no CUDA GPU is available")
    return device


def _verify_weights(directory: Path, card: ModelCard) -> None:
    """Raise ModelError unless every weights file of the card is there with the card's SHA-256."""
    for entry in card.networks:
        path = directory / entry.weights
        if not path.is_file():
            raise ModelError(f"model {card.name!r}: weights file {path} is missing")
        if entry.sha256 is None:
            raise ModelError(f"model {card.name!r}: the card gives no sha256 for {entry.weights}")
        actual = file_sha256(path)
        if actual != entry.sha256:
            raise ModelError(
                f"model {card.name!r}: {entry.weights} has SHA-256 {actual}, the card says"
                f" {entry.sha256}; the file is damaged or was changed after the card was written"
            )


def _build(entry: NetworkEntry) -> nn.Module:
    if entry.architecture not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ModelError(f"unknown architecture {entry.architecture!r} (known: {known})")
    return build_network(entry.architecture, **entry.options)


def load_model(directory: Path | str, device: str = "auto") -> LoadedModel:
    """Load a model folder: check the card, verify every checksum, build and fill the networks.

    Parameters
    ----------
    directory
        The model folder.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelError
        Card invalid, weights missing, checksum differing from the card, or weights not fitting
        the architecture the card names.
    """
    directory = Path(directory)
    card = read_model_card(directory)
    target = pick_device(device)
    networks: dict[str, nn.Module] = {}
    _verify_weights(directory, card)
    for entry in card.networks:
        path = directory / entry.weights
        network = _build(entry)
        try:
            state = load_file(path)
            network.load_state_dict(state, strict=True)
        except (SafetensorError, RuntimeError) as error:
            raise ModelError(f"model {card.name!r}: {entry.weights} does not fit {entry.architecture}: {error}") from None
        networks[entry.role] = network.to(target).eval()
    return LoadedModel(card=card, directory=directory, device=target, networks=networks)


def save_model(
    directory: Path | str, card: ModelCard, networks: Mapping[str, nn.Module]
) -> ModelCard:
    """Write the networks as safetensors and the card with their checksums.

    Parameters
    ----------
    directory
        The model folder (created if needed).
    card
        The card; the ``sha256`` of each network entry is filled in here.
    networks
        A module for every network role of the card.

    Returns
    -------
    ModelCard
        The card as written.
    """
    directory = Path(directory)
    roles = {entry.role for entry in card.networks}
    if roles != set(networks):
        raise ModelError(f"networks {sorted(networks)} do not match the card's roles {sorted(roles)}")
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for entry in card.networks:
        path = directory / entry.weights
        state = {key: value.detach().cpu().contiguous() for key, value in networks[entry.role].state_dict().items()}
        # No metadata: safetensors writes it in no fixed order, and the card already says it all;
        # without it the same weights give the same bytes (and the same SHA-256) every time.
        save_file(state, path)
        entries.append(entry.model_copy(update={"sha256": file_sha256(path)}))
    written = card.model_copy(update={"networks": entries})
    _write_card(directory, written)
    return written


def record_metrics(directory: Path | str, metrics: Mapping[str, float]) -> ModelCard:
    """Add figures measured on a written model (a benchmark's, the bfloat16 agreement) to its card.

    The weights are checked against the card first, so figures are only recorded for the weights
    they were measured on; the weights themselves are left as they are.

    Parameters
    ----------
    directory
        The model folder.
    metrics
        Figure name to value; a name the card already has is replaced, the others are kept.

    Returns
    -------
    ModelCard
        The card as written.

    Raises
    ------
    ModelError
        The card cannot be read, its weights do not match it, or a value is not a finite number.
    """
    directory = Path(directory)
    figures = dict(metrics)
    for key, value in figures.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ModelError(f"metric {key!r} must be a finite number, got {value!r}")
    card = read_model_card(directory)
    _verify_weights(directory, card)
    written = card.model_copy(update={"metrics": {**card.metrics, **figures}})
    _write_card(directory, written)
    return written


def _write_card(directory: Path, card: ModelCard) -> None:
    data = card.model_dump(mode="json", exclude_none=True)
    (directory / CARD_FILE).write_text(tomli_w.dumps(data), "utf-8")


def list_models(models_dir: Path | str) -> list[tuple[Path, ModelCard | ModelError]]:
    """Every model folder under ``models_dir`` with its card, or the error that stops it loading.

    Checksums are verified; networks are not built.
    """
    found: list[tuple[Path, ModelCard | ModelError]] = []
    root = Path(models_dir)
    for directory in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        try:
            card = read_model_card(directory)
            _verify_weights(directory, card)
            found.append((directory, card))
        except ModelError as error:
            found.append((directory, error))
    return found
