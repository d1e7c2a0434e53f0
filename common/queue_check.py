"""Refuse a jobs config whose queues RabbitMQ would refuse to declare, before anything uses it.

RabbitMQ never changes an existing queue's type or arguments: declaring a
classic queue as quorum (or a quorum work queue with another `x-delivery-limit`)
is refused with PRECONDITION_FAILED, so a config edit that changes a type's
`queue_type` would leave its producer and workers unable to declare their
queues. The scaler reads every queue's type and arguments from the management
API when it loads the config (at start and on every reload) and compares them
with what this config would declare; a difference is a ConfigError that names
the type, the queue, what it is now, what the config asks, and how to migrate.
At start the scaler stops with it; on a reload common.config_watch keeps the
old config in force and shows the error in the scaler's status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.config import DELIVERY_LIMIT_MARGIN, ConfigError, JobsConfig, JobType
from common.queues import OLDER_DEAD_LETTERS, migration_steps, queue_arguments

#: A queue's `x-queue-type` is compared as its type, not among its other arguments.
TYPE_ARGUMENT = "x-queue-type"


def _problem(job_type: JobType, name: str, wanted: dict[str, Any], existing: Mapping[str, Any]) -> str | None:
    """What is wrong with declaring `name` with `wanted` over the queue the management API shows, if anything."""
    now = str(existing.get("type") or "classic")
    if now != job_type.queue_type.value:
        return (
            f"job type {job_type.name!r}: queue {name!r} is a {now} queue on the broker, the config asks for "
            f"queue_type {job_type.queue_type.value!r}; RabbitMQ cannot change a queue's type, "
            f"{migration_steps(job_type)}"
        )
    has = {key: value for key, value in (existing.get("arguments") or {}).items() if key != TYPE_ARGUMENT}
    asks = {key: value for key, value in wanted.items() if key != TYPE_ARGUMENT}
    differences = [
        f"{key}: {has.get(key)!r} on the broker, {asks.get(key)!r} in the config"
        for key in {**has, **asks}
        if has.get(key) != asks.get(key)
    ]
    if differences:
        return (
            f"job type {job_type.name!r}: queue {name!r} exists with other arguments ({'; '.join(differences)}); "
            f"RabbitMQ cannot change them (x-delivery-limit is delivery_limit, or max_attempts + "
            f"{DELIVERY_LIMIT_MARGIN}; {OLDER_DEAD_LETTERS}): restore the old setting, or {migration_steps(job_type)}"
        )
    return None


def declaration_conflicts(config: JobsConfig, declared: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One message per queue of `config` that exists in `declared` (name -> the management API's queue object)
    with another type or other arguments."""
    problems = []
    for job_type in config.job_types.values():
        for name, wanted in queue_arguments(job_type).items():
            problem = _problem(job_type, name, wanted, declared[name]) if name in declared else None
            if problem:
                problems.append(problem)
    return problems


def check_declarations(config: JobsConfig, declared: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Raise ConfigError listing every conflict (`declared` None: the broker could not be asked, nothing to check)."""
    problems = declaration_conflicts(config, declared or {})
    if problems:
        raise ConfigError(f"{config.source}: " + f"\n{config.source}: ".join(problems))
