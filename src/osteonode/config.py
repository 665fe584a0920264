"""The node's configuration: pydantic models of ``node_config/node.toml``.

Every key has an embedded default, so the node runs with no file at all. A site's file changes only
the keys it names; ``OSTEONODE_SECTION__KEY=value`` environment variables override single keys on top
(the value is read as a TOML literal when it parses as one, else as a plain string), which is how
containers and systemd units set ports and database URLs.

A bad file never half-starts the node: :func:`load_config` collects every problem (unknown key, wrong
type, port out of range, a destination that a rule or pipeline names but nobody defined) and raises one
:class:`ConfigError` that lists them all with the dotted key and the reason.
:func:`check_config` returns the same list without raising, and adds the checks that need the machine
(an unwritable spool directory).

Relative paths (the spool directory, a SQLite file) are relative to the node's working directory.
"""

from __future__ import annotations

import enum
import os
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "ANY_CALLING_AE",
    "AllowedCaller",
    "AssociationPolicy",
    "BFloat16Autocast",
    "ChannelsLast",
    "ConfigError",
    "ConfigProblem",
    "DatabaseSettings",
    "DeliverySettings",
    "Destination",
    "InferenceSettings",
    "HttpSettings",
    "IntendedUsePolicy",
    "LimitsSettings",
    "LoggingSettings",
    "ModelsSettings",
    "NodeConfig",
    "NodeSettings",
    "PipelineName",
    "PipelineSettings",
    "SHIPPED_PIPELINES",
    "RoutingRule",
    "RoutingSettings",
    "SkipReason",
    "SrStorage",
    "StorageSettings",
    "TlsSettings",
    "TlsVersion",
    "WorkerSettings",
    "check_config",
    "default_routing_rules",
    "describe_validation_error",
    "load_config",
]

#: The file ``osteonode serve`` reads when no ``--config`` is given (relative to the working directory).
DEFAULT_CONFIG_PATH = Path("node_config/node.toml")
#: Environment variables with this prefix override single keys: ``OSTEONODE_NODE__PORT=11113``.
ENV_PREFIX = "OSTEONODE_"
#: Variables with the prefix that are not key overrides.
_ENV_NOT_KEYS = frozenset({"OSTEONODE_CONFIG"})

AeTitle = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[\x20-\x5b\x5d-\x7e]*$")]
Port = Annotated[int, Field(ge=1, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]
Uid = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")]


PipelineName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
"""The name of a configured pipeline (``[pipelines.<name>]``, a routing rule's ``pipelines``).

Lower-case letters, digits and underscores, so that ``OSTEONODE_PIPELINES__<NAME>__KEY`` overrides
reach every pipeline."""


class SkipReason(enum.StrEnum):
    """Why the node did not analyse an image; recorded on the job and shown by ``status``."""

    UNREADABLE = "unreadable"
    NO_PIXEL_DATA = "no_pixel_data"
    MULTI_FRAME = "multi_frame"
    COLOUR_IMAGE = "colour_image"
    NOT_RADIOGRAPH = "not_radiograph"
    FOR_PROCESSING = "for_processing"
    LATERAL_VIEW = "lateral_view"
    UNKNOWN_BODY_PART = "unknown_body_part"
    EXCLUDED_BY_RULE = "excluded_by_rule"
    PIPELINE_DISABLED = "pipeline_disabled"


class SrStorage(enum.StrEnum):
    """Which SR storage class to send to a destination (some PACS reject Comprehensive 3D SR)."""

    COMPREHENSIVE_3D = "comprehensive-3d"
    COMPREHENSIVE = "comprehensive"


class _Section(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Section):
    """Identity and listening address of the node's DICOM service."""

    ae_title: AeTitle = "OSTEONODE"
    host: str = "127.0.0.1"
    port: Port = 11112
    name: str = Field(default="osteonode", min_length=1, description="Device observer name in SRs.")
    device_uid: Uid | None = Field(
        default=None,
        description="Device Observer UID in SRs; None: a stable UID derived from the node name.",
    )


#: An allow-list entry with this calling AE title admits any title (from its ``host``, if given).
ANY_CALLING_AE = "*"


class AllowedCaller(_Section):
    """One entry of the calling-AE allow-list.

    ``ae_title`` is a calling AE title, or ``*`` for any. ``host`` pins the entry to a source: a host
    name, an address or a network (``10.1.2.0/24``). ``max_associations`` caps the associations one
    calling AE title admitted by this entry may hold at once.
    """

    ae_title: AeTitle
    host: str | None = Field(default=None, min_length=1)
    max_associations: Annotated[int, Field(ge=1, le=1000)] | None = None


def _this_machine_only() -> list[AllowedCaller]:
    # Safe by default: any calling AE title, but only from the loopback addresses; a node that
    # listens on the hospital network lists its callers.
    return [
        AllowedCaller(ae_title=ANY_CALLING_AE, host="127.0.0.0/8"),
        AllowedCaller(ae_title=ANY_CALLING_AE, host="::1"),
    ]


class AssociationPolicy(_Section):
    """Who may associate with the node, how many at once, and how long the node waits.

    Only established associations count against ``max_associations`` and the per-caller limits; a
    connection that has not yet sent its A-ASSOCIATE-RQ is closed after ``request_timeout_s``, and at
    most ``max_pending_connections`` such connections are held at once.
    """

    require_called_ae: bool = True
    allowed_callers: list[AllowedCaller] = Field(
        default_factory=_this_machine_only,
        description="Who may call; default: any calling AE title from this machine only.",
    )
    max_associations: Annotated[int, Field(ge=1, le=1000)] = 10
    max_associations_per_caller: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None, description="Associations one calling AE title may hold at once; None: no cap."
    )
    max_pending_connections: Annotated[int, Field(ge=1, le=10000)] = 50
    request_timeout_s: PositiveSeconds = Field(
        default=5.0, description="How long a new connection may take to send its A-ASSOCIATE-RQ."
    )
    acse_timeout_s: PositiveSeconds = 30.0
    dimse_timeout_s: PositiveSeconds = 60.0
    network_timeout_s: PositiveSeconds = 60.0


class TlsVersion(enum.StrEnum):
    """Oldest TLS version the node negotiates (BCP 195 allows 1.2 and 1.3)."""

    TLS_1_2 = "1.2"
    TLS_1_3 = "1.3"


class TlsSettings(_Section):
    """DICOM TLS (PS3.15 Annex B) for the node's port (``[tls]``) or one destination's
    (``[destinations.<name>.tls]``).

    ``certificate`` and ``private_key`` (PEM) are this side's identity: required to receive, and
    for a destination the client certificate of mutual authentication. ``ca_certificates`` (PEM)
    are the authorities the peer's certificate must chain to: when receiving, set them to require
    and verify client certificates (mutual authentication), leave them unset to accept clients
    without one; when sending, unset means the system's trust store. ``check_hostname``: a
    destination's certificate must name its ``host``.
    """

    enabled: bool = False
    certificate: Path | None = None
    private_key: Path | None = None
    ca_certificates: Path | None = None
    check_hostname: bool = True
    minimum_version: TlsVersion = TlsVersion.TLS_1_2

    @model_validator(mode="after")
    def _key_with_certificate(self) -> TlsSettings:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key must be given together")
        return self


class StorageSettings(_Section):
    """Where received and produced objects are kept, and for how long."""

    spool_dir: Path = Path("var/spool")
    min_free_mb: Annotated[int, Field(ge=0)] = 512
    retention_days: Annotated[float, Field(gt=0)] = 30.0
    purge_interval_minutes: Annotated[float, Field(gt=0)] = 60.0


class DatabaseSettings(_Section):
    """SQLAlchemy URL: the embedded SQLite file by default, PostgreSQL for scale-out."""

    url: str = Field(default="sqlite:///var/osteonode.db", min_length=1)

    @field_validator("url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("must start with sqlite:, postgresql: or postgresql+psycopg:")
        return url


class WorkerSettings(_Section):
    """Analysis workers: how many threads, and how jobs are leased and retried."""

    count: Annotated[int, Field(ge=0, le=64)] = 2
    lease_seconds: PositiveSeconds = 600.0
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    poll_interval_s: PositiveSeconds = Field(
        default=10.0,
        description="Safety net: how often an idle worker looks for work no commit announced"
        " (a committed job wakes it at once).",
    )
    reclaim_interval_s: PositiveSeconds = 30.0
    # Supervision (osteonode.supervision): a worker thread that died is restarted; a worker on one
    # job longer than stuck_after_s is reported stuck; heartbeats make both visible to `status`.
    heartbeat_interval_s: PositiveSeconds = 10.0
    stuck_after_s: PositiveSeconds = 300.0


class LimitsSettings(_Section):
    """What an image may declare before the node decodes it, and how long a decode may take.

    The defaults admit every real radiograph: full-field detectors reach about 4300 x 4300 pixels
    (18.5 million) and stitched long-leg or whole-spine films about 3000 x 9000. Checked from the
    header, before any decoding: decoding costs about 14 bytes per declared pixel.
    """

    max_rows: Annotated[int, Field(ge=1, le=65535)] = 16384
    max_columns: Annotated[int, Field(ge=1, le=65535)] = 16384
    max_pixels: Annotated[int, Field(ge=1)] = 40_000_000
    max_file_mb: Annotated[float, Field(gt=0)] = 512.0
    decode_timeout_s: PositiveSeconds = 120.0
    decoder_memory_mb: Annotated[int, Field(ge=256)] = 4096


class BFloat16Autocast(enum.StrEnum):
    """When a model runs in bfloat16 autocast (``[inference] bfloat16_autocast``)."""

    AUTO = "auto"
    """A model whose card records that it agrees with float32 within ``bfloat16_tolerance``
    (``osteonode models verify-precision``), on a CUDA device or a CPU with native bfloat16
    arithmetic (AMX or AVX512-BF16)."""
    ON = "on"
    """Every model (on a CPU without native bfloat16 this is usually slower)."""
    OFF = "off"
    """Never: float32 throughout."""


class ChannelsLast(enum.StrEnum):
    """Which networks run with channels-last (NHWC) tensors (``[inference] channels_last``)."""

    AUTO = "auto"
    """The architectures for which ``bench/inference.py`` measured a gain (VGG, ResNet, DarkNet
    and the locators; not ConvNeXt, which it slows down)."""
    ON = "on"
    """Every network."""
    OFF = "off"
    """None: PyTorch's default (NCHW) layout."""


class InferenceSettings(_Section):
    """``[inference]``: how the models run on this machine."""

    threads_per_worker: Annotated[int, Field(ge=0, le=256)] = Field(
        default=0,
        description="Intra-op threads of each worker; 0: the CPU cores shared among the workers,"
        " so that workers x threads never exceeds the cores.",
    )
    bfloat16_autocast: BFloat16Autocast = BFloat16Autocast.AUTO
    bfloat16_tolerance: Annotated[float, Field(gt=0.0, le=0.05)] = Field(
        default=1e-3,
        description="Under 'auto', the largest difference from float32 (of a probability, or a BMD"
        " in g/cm2) a model card may record for the model to run in bfloat16.",
    )
    channels_last: ChannelsLast = ChannelsLast.AUTO
    bfloat16_pipelines: None = Field(
        default=None, exclude=True, description="Retired: each model's card decides (see below)."
    )
    compile: bool = Field(
        default=False,
        description="Compile the networks with torch.compile when the models load (tens of"
        " seconds at start); where compilation is unavailable the node says so and runs them as"
        " they are.",
    )


    @field_validator("bfloat16_pipelines", mode="before")
    @classmethod
    def _retired_pipeline_list(cls, value: object) -> None:
        raise ValueError(
            "retired: a model now runs in bfloat16 when its card records agreement with float32"
            " (osteonode models verify-precision) under bfloat16_autocast = 'auto'; remove this key"
        )


class LoggingSettings(_Section):
    """Log level and format (``auto``: readable on a terminal, JSON lines otherwise)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "console", "json"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, level: object) -> object:
        return level.upper() if isinstance(level, str) else level


class Destination(_Section):
    """A DICOM node (usually the PACS) that receives the node's reports, and how to send to it.

    A failed send that may succeed later (no connection, timeout, association rejected transient,
    0xA7xx out of resources) is tried again after an exponential back-off: ``backoff_initial_s``,
    doubling per attempt up to ``backoff_max_s``, each delay shortened by a random fraction of at
    most ``backoff_jitter`` so that many deliveries do not retry in lock-step. After
    ``max_attempts`` tries, or at once on a permanent failure, the delivery is dead-lettered.
    """

    ae_title: AeTitle
    host: str = Field(min_length=1)
    port: Port
    sr_storage: SrStorage = SrStorage.COMPREHENSIVE_3D
    calling_ae_title: AeTitle | None = Field(
        default=None, description="AE title the node calls this destination from; None: [node].ae_title."
    )
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 30
    backoff_initial_s: PositiveSeconds = 30.0
    backoff_max_s: PositiveSeconds = 3600.0
    backoff_jitter: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25
    timeout_s: PositiveSeconds = Field(
        default=60.0, description="Connection, ACSE, DIMSE and network timeout of one send."
    )
    tls: TlsSettings = Field(default_factory=TlsSettings)

    @model_validator(mode="after")
    def _backoff_order(self) -> Destination:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must not be less than backoff_initial_s")
        return self


class DeliverySettings(_Section):
    """How often the node looks for reports due to be sent, and how long a send may hold one."""

    interval_s: PositiveSeconds = Field(
        default=2.0,
        description="How often each destination's sender looks for due deliveries no commit"
        " announced (retries whose back-off ran out); a committed delivery wakes it at once.",
    )
    lease_seconds: PositiveSeconds = Field(
        default=300.0, description="A delivery held longer than this by a silent sender is sent again."
    )


class RoutingRule(_Section):
    """One routing rule; the first rule whose every given criterion matches decides.

    Each criterion is a list of accepted values (any one matches); a criterion left empty is not
    checked. Values are compared case-insensitively after removing spaces, hyphens and underscores,
    so ``L-SPINE``, ``l spine`` and ``LSPINE`` are the same body part. An empty string in a list
    accepts a missing or empty attribute. ``keywords`` are matched as whole words (or word sequences)
    in the Study, Series, Protocol and Requested Procedure descriptions.

    A rule either sends the image to its ``pipelines`` (each enabled one analyses it and reports
    on its own; ``pipeline = "x"`` is short for ``pipelines = ["x"]``) or skips it with a ``skip``
    reason.
    """

    name: str = Field(min_length=1)
    pipelines: list[PipelineName] = Field(default_factory=list)
    skip: SkipReason | None = None
    modality: list[str] = Field(default_factory=list)
    sop_class: list[str] = Field(default_factory=list, description="SOP Class UIDs.")
    body_part: list[str] = Field(default_factory=list)
    view: list[str] = Field(
        default_factory=list,
        description="AP, PA, LATERAL, OBLIQUE or '' (from View Position / View Code Sequence).",
    )
    laterality: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    destinations: list[str] | None = Field(
        default=None, description="Overrides the pipeline's destinations for images this rule routes."
    )

    @model_validator(mode="before")
    @classmethod
    def _single_pipeline(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "pipeline" in data:
            if "pipelines" in data:
                raise ValueError("give 'pipeline' or 'pipelines', not both")
            data = {**data, "pipelines": [data["pipeline"]]}
            del data["pipeline"]
        return data

    @model_validator(mode="after")
    def _one_outcome(self) -> RoutingRule:
        if bool(self.pipelines) == (self.skip is not None):
            raise ValueError(f"rule {self.name!r} must name exactly one of 'pipelines' or 'skip'")
        if len(set(self.pipelines)) != len(self.pipelines):
            raise ValueError(f"rule {self.name!r} names a pipeline twice: {self.pipelines}")
        return self


def default_routing_rules() -> list[RoutingRule]:
    """The shipped routing rules (``defaults/routing.toml`` inside the package)."""
    text = resources.files("osteonode").joinpath("defaults/routing.toml").read_text("utf-8")
    return [RoutingRule.model_validate(rule) for rule in tomllib.loads(text)["rules"]]


class RoutingSettings(_Section):
    """Which images are analysed, and by which pipeline."""

    accepted_modalities: list[str] = Field(
        default_factory=lambda: ["CR", "DX", "RG"],
        description="Other modalities are skipped as not_radiograph before any rule is tried.",
    )
    rules: list[RoutingRule] = Field(default_factory=default_routing_rules)


class IntendedUsePolicy(enum.StrEnum):
    """What to do with a film outside a method's intended population (age, sex, view)."""

    ANALYSE_WITH_NOTE = "analyse_with_note"
    SKIP = "skip"


Probability = Annotated[float, Field(gt=0.0, lt=1.0)]


class PipelineSettings(_Section):
    """``[pipelines.<name>]``: one configured pipeline.

    What the pipeline does comes from its model folder's card (its ``pipeline`` key names the
    implementation, e.g. ``lumbar`` or ``classifier``); these keys say whether and where it runs.
    """

    enabled: bool = True
    model: str | None = Field(
        default=None,
        description="Folder name under [models].dir; None: the shipped demo model of a shipped"
        " pipeline, else the pipeline's own name.",
    )
    destinations: list[str] = Field(default_factory=list)
    outside_intended_use: IntendedUsePolicy = IntendedUsePolicy.ANALYSE_WITH_NOTE
    report_not_evaluable: bool = Field(
        default=True, description="Send an SR saying why when a film cannot be assessed."
    )
    thresholds: dict[str, Probability] = Field(
        default_factory=dict,
        description="Decision cut-offs by name (the model card's or the method's defaults otherwise):"
        " chest 'stage1' and 'stage2', hip 'osteoporosis', a classifier each stage's network.",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_threshold_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for old, new in _RENAMED_THRESHOLDS.items():
                if old in data:
                    raise ValueError(f"'{old}' is now 'thresholds.{new}' (thresholds = {{ {new} = ... }})")
        return data

    def model_name(self, pipeline: str) -> str:
        """The model folder this pipeline uses."""
        return self.model or SHIPPED_PIPELINES.get(pipeline, pipeline)


#: Threshold keys of osteonode 0.1 and their names under ``thresholds``.
_RENAMED_THRESHOLDS = {"stage1_threshold": "stage1", "stage2_threshold": "stage2", "threshold": "osteoporosis"}

#: The pipelines every node has unless its configuration disables them, with their demo model
#: folders; ``[pipelines.<name>]`` changes their keys or adds others.
SHIPPED_PIPELINES: Mapping[str, str] = MappingProxyType(
    {
        "lumbar": "lumbar-demo",
        "lumbar_ap": "lumbar-ap-demo",
        "lumbar_lateral": "lumbar-lateral-demo",
        "chest": "chest-demo",
        "hip": "hip-demo",
    }
)


class ModelsSettings(_Section):
    """Where model folders live and which device runs them."""

    dir: Path = Path("models")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")


class HttpSettings(_Section):
    """The node's HTTP port: ``/health``, ``/metrics`` and the admin page.

    It binds to loopback by default: put a TLS reverse proxy in front to reach it from elsewhere.
    Actions that change state (retrying a dead delivery) and the routing file tester need
    ``admin_token``; without one they are refused and the page is read-only.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 8480
    admin_token: SecretStr | None = Field(
        default=None,
        description="Secret for state-changing requests; set it from the environment"
        " (OSTEONODE_HTTP__ADMIN_TOKEN) rather than in the file. `config show` masks it.",
    )
    max_upload_mb: Annotated[int, Field(ge=1, le=4096)] = 256

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_is_none(cls, token: object) -> object:
        # A compose file or unit passes an unset variable as "": that means no token, not a bad one.
        return None if token == "" else token

    @field_validator("admin_token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("admin_token must be at least 16 characters (e.g. `openssl rand -hex 16`)")
        return token


class NodeConfig(_Section):
    """The whole node configuration, as read from ``node.toml`` over the embedded defaults."""

    node: NodeSettings = Field(default_factory=NodeSettings)
    association: AssociationPolicy = Field(default_factory=AssociationPolicy)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    destinations: dict[str, Destination] = Field(default_factory=dict)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    pipelines: dict[PipelineName, PipelineSettings] = Field(default_factory=dict)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)

    @model_validator(mode="before")
    @classmethod
    def _every_routed_pipeline(cls, data: Any) -> Any:
        """Add the shipped pipelines, and any a routing rule names, with default keys.

        A site's model is then a model folder and a routing rule: ``[pipelines.<name>]`` is only
        needed to change a key (its model folder defaults to the pipeline's name).
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("pipelines", {}), Mapping):
            return data
        pipelines: dict[str, Any] = {name: {} for name in SHIPPED_PIPELINES}
        routing = data.get("routing", {})
        rules = routing.get("rules", []) if isinstance(routing, Mapping) else []
        for rule in rules if isinstance(rules, list) else []:
            if isinstance(rule, Mapping):
                named = rule.get("pipelines", [rule.get("pipeline")])
                for name in named if isinstance(named, list) else []:
                    if isinstance(name, str):
                        pipelines.setdefault(name, {})
        pipelines.update(data.get("pipelines", {}))
        return {**data, "pipelines": pipelines}

    def pipeline(self, name: str) -> PipelineSettings:
        """The settings of one configured pipeline.

        Raises
        ------
        KeyError
            No pipeline of that name is configured.
        """
        try:
            return self.pipelines[name]
        except KeyError:
            raise KeyError(f"no pipeline {name!r} is configured") from None


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a configuration: the dotted key and why."""

    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


class ConfigError(ValueError):
    """The configuration cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid configuration {source}:\n{listing}")


def load_config(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """Read a node configuration file over the embedded defaults.

    Parameters
    ----------
    path
        The TOML file. ``None`` reads ``$OSTEONODE_CONFIG`` if set, else
        ``node_config/node.toml`` when it exists, else uses the embedded defaults alone.
    environ
        Environment to take ``OSTEONODE_SECTION__KEY`` overrides from; ``os.environ`` by default.

    Returns
    -------
    NodeConfig
        The validated configuration.

    Raises
    ------
    ConfigError
        Listing every problem found (file unreadable or not TOML, unknown keys, wrong types,
        values out of range, dangling destination references).
    """
    config, problems, _ = _parse(path, environ)
    if problems or config is None:
        raise ConfigError(_describe_source(path, environ), problems)
    return config


def check_config(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> list[ConfigProblem]:
    """Every problem :func:`load_config` would raise, plus those the machine reveals.

    Beyond the file itself this checks that the spool directory can be created and written
    (creating nothing).

    Parameters
    ----------
    path, environ
        As for :func:`load_config`.

    Returns
    -------
    list of ConfigProblem
        Empty when the configuration is usable.
    """
    _, problems, data = _parse(path, environ)
    if data is not None:
        problems.extend(_machine_problems(data))
    return problems


def _describe_source(path: Path | str | None, environ: Mapping[str, str] | None) -> str:
    resolved = _resolve_path(path, os.environ if environ is None else environ)
    return str(resolved) if resolved is not None else "(embedded defaults)"


def _parse(
    path: Path | str | None, environ: Mapping[str, str] | None
) -> tuple[NodeConfig | None, list[ConfigProblem], dict[str, Any] | None]:
    """Validate the file plus overrides; returns the config (None if invalid), problems, raw data."""
    environ = os.environ if environ is None else environ
    path = _resolve_path(path, environ)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except OSError as error:
            return None, [ConfigProblem("(file)", f"cannot read {path}: {error.strerror}")], None
        except tomllib.TOMLDecodeError as error:
            return None, [ConfigProblem("(file)", f"not valid TOML: {error}")], None
    problems = _apply_environment(data, environ)
    problems.extend(_reference_problems(data))
    try:
        config: NodeConfig | None = NodeConfig.model_validate(data)
    except ValidationError as error:
        problems.extend(describe_validation_error(item) for item in error.errors())
        config = None
    if config is not None and config.tls.enabled and config.tls.certificate is None:
        problems.append(
            ConfigProblem("tls.certificate", "receiving with TLS needs the node's certificate and private_key")
        )
        config = None
    return config, problems, data


def _resolve_path(path: Path | str | None, environ: Mapping[str, str]) -> Path | None:
    if path is not None:
        return Path(path)
    if environ.get("OSTEONODE_CONFIG"):
        return Path(environ["OSTEONODE_CONFIG"])
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> list[ConfigProblem]:
    """Set ``OSTEONODE_A__B=value`` as ``data[a][b]``; names are lower-cased."""
    problems = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in _ENV_NOT_KEYS:
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if len(keys) < 2 or not all(keys):
            problems.append(
                ConfigProblem(name, "environment override must look like OSTEONODE_SECTION__KEY")
            )
            continue
        target = data
        for key in keys[:-1]:
            child = target.setdefault(key, {})
            if not isinstance(child, dict):
                problems.append(ConfigProblem(".".join(keys), f"{key!r} is not a section"))
                break
            target = child
        else:
            target[keys[-1]] = _literal(raw)
    return problems


def _literal(raw: str) -> Any:
    """A TOML literal (``11113``, ``true``, ``["A", "B"]``) when it is one, else the plain string."""
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def describe_validation_error(error: Mapping[str, Any]) -> ConfigProblem:
    """One pydantic error item as a :class:`ConfigProblem` with a dotted key and a plain reason."""
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return ConfigProblem(key, "unknown key")
    reason = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] not in {"missing", "value_error"} and "input" in error:
        reason = f"{reason} (got {error['input']!r})"
    return ConfigProblem(key, reason)


def _reference_problems(data: Mapping[str, Any]) -> list[ConfigProblem]:
    """Destinations named by rules and pipelines must be defined under ``[destinations]``.

    Works on the raw file contents so that it reports alongside type errors elsewhere.
    """
    defined = _section(data, "destinations")
    references: list[tuple[str, object, str]] = []
    rules = _section(data, "routing").get("rules", [])
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(rule, Mapping):
            references.append(
                (f"routing.rules.{index}.destinations", rule.get("destinations"), f" (rule {rule.get('name')!r})")
            )
    for pipeline, pipeline_data in _section(data, "pipelines").items():
        if isinstance(pipeline_data, Mapping):
            references.append((f"pipelines.{pipeline}.destinations", pipeline_data.get("destinations"), ""))
    problems = []
    for key, names, context in references:
        for name in names if isinstance(names, list) else []:
            if name not in defined:
                problems.append(
                    ConfigProblem(key, f"destination {name!r}{context} is not defined under [destinations]")
                )
    return problems


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    return value if isinstance(value, Mapping) else {}


def _machine_problems(data: Mapping[str, Any]) -> list[ConfigProblem]:
    """The spool directory, or the nearest folder above it that exists, must be writable.

    Nothing is created: the node makes the spool directory when it starts.
    """
    spool = Path(_section(data, "storage").get("spool_dir", StorageSettings().spool_dir))
    existing = spool.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = f"{existing} is not a directory"
    else:
        try:
            # A probe, not a permission check: root passes os.access on read-only file systems.
            tempfile.TemporaryFile(dir=existing).close()
            return []
        except OSError as error:
            reason = f"{existing} is not writable: {error.strerror or error}"
    return [ConfigProblem("storage.spool_dir", f"spool directory {spool} cannot be made: {reason}")]
