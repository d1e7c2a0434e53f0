"""The job-type settings a simulation runs with: a jobs.config.json (or a part of one) matched to the trace's types.

A trace names its own job types (one per Azure function, say), so the file
may set them by name, and a `"*"` entry gives the settings of every type it
does not name; without a file every type has the project's defaults. Each
entry is validated exactly as the scaler validates the real file
(`common.config.parse_config`), so a typo is an error naming type and field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from common.config import ConfigError, JobType, parse_config

#: The entry whose settings every type not named in the file gets.
EVERY_TYPE = "*"


def job_types(
    names: Iterable[str], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, JobType]:
    """Settings for every type in `names`, from the file at `path` (if any), then `overrides` on top of all."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be an object mapping job-type names to settings")
    template = data.get(EVERY_TYPE, {})
    entries = {}
    for name in names:
        settings = {"queue": f"sim_{name}", **template, **data.get(name, {}), **(overrides or {})}
        settings.pop("default", None)
        entries[name] = settings
    return dict(parse_config(entries, str(path or "simulation defaults")).job_types)


def settings_of(job: JobType, fields: Iterable[str]) -> dict[str, Any]:
    """The named settings of `job`, as they would appear in jobs.config.json."""
    return {name: getattr(job, name) for name in fields}
