"""Load and validate `jobs.config.json`, the one description of every job type.

The producer, the scaler and the workers all read the file through this module,
so they can never disagree about a queue name, a limit or a default. The file
is a JSON object mapping job-type names to settings. Only `queue` is required;
the seed format `{"new-job": {"queue": "queue_new", "image": "worker-new:latest",
"threshold": 10}}` is a complete job type and every other field has the default
documented below and in the README. Unknown fields are errors: a typo such as
`max_worker` must not silently fall back to a default.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.env import SettingsError, env_str
from common.errors import AutoscalerError

#: Job-type names end up in URLs, Kubernetes labels and Job names, so they are
#: restricted to lower-case DNS-label characters (but may be longer than 63:
#: the Kubernetes backend shortens them with a hash where it must).
JOB_TYPE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,251}[a-z0-9])?$")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
HANDLER_NAME = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|E|Ei|P|Pi)?$")
RESOURCE_NAMES = frozenset({"cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"})
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
#: How long a worker asked to stop may take to finish its row before it is killed (the default of
#: `stop_grace_seconds`, and what every component uses for a worker of a type it no longer knows).
DEFAULT_STOP_GRACE_SECONDS = 30.0
#: Deliveries of one work-queue message beyond `max_attempts` that a quorum queue allows before RabbitMQ
#: dead-letters it itself (the default `delivery_limit` is `max_attempts` + this; see common.queues).
DELIVERY_LIMIT_MARGIN = 2


class QueueType(str, Enum):
    """The RabbitMQ queue type of a job type's work, retry and dead queues (RabbitMQ's own `x-queue-type` words)."""

    CLASSIC = "classic"
    QUORUM = "quorum"


def queue_type_setting(name: str, default: QueueType, environ: Mapping[str, str] = os.environ) -> QueueType:
    """The environment variable `name` as a queue type, or `default` when it is unset or blank."""
    text = env_str(name, None, environ)
    if text is None:
        return default
    try:
        return QueueType(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a queue type: use quorum or classic") from None


def default_queue_type(environ: Mapping[str, str] = os.environ) -> QueueType:
    """QUEUE_TYPE: the queue type of every job type that does not name its own (default classic)."""
    return queue_type_setting("QUEUE_TYPE", QueueType.CLASSIC, environ)


class ConfigError(AutoscalerError, ValueError):
    """The jobs config is unreadable or invalid; the message names the job type and field."""


class Resources(BaseModel):
    """Kubernetes-style resource requests and limits (cpu, memory, nvidia.com/gpu)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: dict[str, str | int] = Field(default_factory=dict)
    limits: dict[str, str | int] = Field(default_factory=dict)

    @field_validator("requests", "limits")
    @classmethod
    def _check_quantities(cls, value: dict[str, str | int]) -> dict[str, str | int]:
        for name, quantity in value.items():
            if name not in RESOURCE_NAMES:
                raise ValueError(f"unknown resource {name!r}; use one of {sorted(RESOURCE_NAMES)}")
            if isinstance(quantity, bool) or not QUANTITY.match(str(quantity)):
                raise ValueError(f"{name}: {quantity!r} is not a Kubernetes quantity (e.g. '500m', '256Mi', 1)")
        return value


class JobType(BaseModel):
    """One job type: where its rows go and how its workers scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    queue: str
    image: str = ""
    description: str = ""
    default: bool = False
    handler: str = ""
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    #: Header names every upload of this type must have (None: any header). A file without one of them
    #: is refused at upload (422 naming the column) instead of every row failing in the workers.
    columns: list[str] | None = None

    threshold: NonNegativeInt = 10
    burst_threshold: NonNegativeInt | None = None
    burst_size: PositiveInt = 5
    max_workers: NonNegativeInt = 10
    min_workers: NonNegativeInt = 0
    idle_seconds: NonNegativeFloat = 30.0
    #: Across types sharing a budget: higher priority first, `weight` the fair share among equal priorities.
    priority: int = 0
    weight: PositiveFloat = 1.0

    prefetch: PositiveInt = 1
    max_attempts: PositiveInt = 3
    retry_delay_seconds: NonNegativeFloat = 1.0
    stop_grace_seconds: NonNegativeFloat = DEFAULT_STOP_GRACE_SECONDS
    #: Rows (or batches) one worker handles at once, each on its own thread: for I/O-bound handlers.
    concurrency: Annotated[int, Field(ge=1, le=256)] = 1
    #: Rows per call of a `handle_batch(rows, context)` handler (1 = one row per call).
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 1
    #: How long a batch waits for more rows before it is handed over with what it has.
    batch_wait_ms: Annotated[float, Field(ge=0, le=60_000)] = 20.0
    #: A handler call running longer fails its rows ("timed out after N s") and the worker exits
    #: non-zero so it is replaced (a stuck thread cannot be stopped). Unset: no limit.
    timeout_seconds: Annotated[float, Field(gt=0)] | None = None

    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    backoff_limit: NonNegativeInt = 0
    ttl_seconds_after_finished: NonNegativeInt = 86400

    #: Quorum (replicated, survives a node) or classic; unset: the QUEUE_TYPE setting. Cannot change once
    #: the queues exist (RabbitMQ refuses to redeclare a queue with another type; see common.queues).
    queue_type: QueueType = QueueType.CLASSIC
    #: Quorum only: deliveries of one work-queue message after which RabbitMQ dead-letters it to `.dead` itself
    #: (`x-delivery-limit`, behind the runtime's own attempt counting); unset: max_attempts + DELIVERY_LIMIT_MARGIN.
    delivery_limit: PositiveInt | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not JOB_TYPE_NAME.match(value):
            raise ValueError(
                "job type names use lower-case letters, digits and '-', start and end with a letter or digit, "
                "at most 253 characters"
            )
        return value

    @field_validator("queue")
    @classmethod
    def _check_queue(cls, value: str) -> str:
        if not QUEUE_NAME.match(value):
            raise ValueError("queue names use letters, digits, '_', '.', ':' and '-', at most 200 characters")
        if value.endswith((".dead", ".retry")):
            raise ValueError(
                "'.dead' and '.retry' are reserved suffixes for a queue's own retry and dead-letter queues"
            )
        return value

    @field_validator("handler")
    @classmethod
    def _check_handler(cls, value: str) -> str:
        if value and not HANDLER_NAME.match(value):
            raise ValueError(
                "a handler is a package under workers/ (e.g. 'sales') or a dotted module path with a handle() function"
            )
        return value

    @field_validator("command")
    @classmethod
    def _check_command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty command cannot start a worker; leave the field out for the default")
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return value

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value or any(not name for name in value):
            raise ValueError("columns lists the header names every upload must have; no empty list or empty names")
        if len(set(value)) != len(value):
            raise ValueError("columns names a column twice")
        return value

    @model_validator(mode="before")
    @classmethod
    def _fill_derived_defaults(cls, data: Any) -> Any:
        """Defaults that depend on other fields (handler, image, burst threshold)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        name = str(data.get("name", ""))
        data.setdefault("handler", name.replace("-", "_"))
        handler = str(data["handler"]).replace("_", "-")
        data.setdefault("image", f"queue-autoscaler/worker-{handler}:latest")
        if data.get("queue_type") is None:
            data["queue_type"] = default_queue_type()
        return data

    @model_validator(mode="after")
    def _check_limits(self) -> JobType:
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers ({self.min_workers}) is above max_workers ({self.max_workers})")
        if self.burst_threshold is not None and self.burst_threshold < self.threshold:
            raise ValueError(f"burst_threshold ({self.burst_threshold}) is below threshold ({self.threshold})")
        if self.delivery_limit is not None and self.queue_type is not QueueType.QUORUM:
            raise ValueError("delivery_limit is a quorum queue's x-delivery-limit; it needs queue_type 'quorum'")
        return self

    @property
    def effective_burst_threshold(self) -> int:
        """`burst_threshold`, or twice `threshold` when it is not set."""
        return self.burst_threshold if self.burst_threshold is not None else 2 * self.threshold

    @property
    def effective_prefetch(self) -> int:
        """`prefetch`, raised so every executor thread has work: `concurrency` rows, or two batches per
        thread when batching (one being handled, the next filling)."""
        if self.batch_size > 1:
            return max(self.prefetch, 2 * self.concurrency * self.batch_size)
        return max(self.prefetch, self.concurrency)

    @property
    def read_ahead(self) -> int:
        """Rows a worker holds beyond what its handler calls take at once: rows waiting their turn in the worker
        (0 for the default `prefetch` 1, where every row held is being handled)."""
        return self.effective_prefetch - self.concurrency * self.batch_size

    @property
    def effective_delivery_limit(self) -> int:
        """`delivery_limit`, or `max_attempts` + DELIVERY_LIMIT_MARGIN when it is not set."""
        return self.delivery_limit if self.delivery_limit is not None else self.max_attempts + DELIVERY_LIMIT_MARGIN

    @property
    def dead_queue(self) -> str:
        return f"{self.queue}.dead"

    @property
    def retry_queue(self) -> str:
        return f"{self.queue}.retry"


@dataclass(frozen=True)
class JobsConfig:
    """Every job type of one config file, in file order."""

    job_types: dict[str, JobType]
    source: str

    @property
    def default(self) -> str:
        """The type an upload without `job_type` goes to: the one marked default, else the first."""
        for name, job_type in self.job_types.items():
            if job_type.default:
                return name
        return next(iter(self.job_types))

    def get(self, name: str) -> JobType | None:
        return self.job_types.get(name)


def _describe(source: str, error: ValidationError, job_type: str) -> str:
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        field = ".".join(loc) if loc else "(entry)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check its spelling against the README's configuration reference)"
        elif item["type"] == "missing":
            message = "required field is missing"
        elif "input" in item and item["type"] not in ("model_type", "dict_type"):
            message = f"{message} (got {json.dumps(item['input'])[:80]})"
        lines.append(f"{source}: job type {job_type!r}, field {field!r}: {message}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "jobs.config.json") -> JobsConfig:
    """Validate already-decoded JSON; raise ConfigError naming job type, field and problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be an object mapping job-type names to settings")
    if not data:
        raise ConfigError(f"{source}: no job types are defined")
    job_types: dict[str, JobType] = {}
    problems: list[str] = []
    queues: dict[str, str] = {}
    for name, settings in data.items():
        if not isinstance(settings, dict):
            problems.append(f"{source}: job type {name!r}: settings must be an object, got {type(settings).__name__}")
            continue
        if "name" in settings:
            problems.append(f"{source}: job type {name!r}, field 'name': unknown field (the key is the name)")
            continue
        try:
            job_type = JobType.model_validate({**settings, "name": name})
        except ValidationError as error:
            problems.append(_describe(source, error, name))
            continue
        if job_type.queue in queues:
            problems.append(
                f"{source}: job type {name!r}, field 'queue': {job_type.queue!r} is already used by job type "
                f"{queues[job_type.queue]!r}; each type needs its own queue"
            )
            continue
        queues[job_type.queue] = name
        job_types[name] = job_type
    defaults = [name for name, job_type in job_types.items() if job_type.default]
    if len(defaults) > 1:
        problems.append(f"{source}: field 'default' is true for {defaults}; at most one job type can be the default")
    if problems:
        raise ConfigError("\n".join(problems))
    return JobsConfig(job_types=job_types, source=source)


def load_config(path: str | Path) -> JobsConfig:
    """Read and validate the config file at `path`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the jobs config: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from error
    return parse_config(data, str(path))
