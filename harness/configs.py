"""Write jobs configs with queue names unique to one test or benchmark run."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any


def write_config(directory: Path, job_types: dict[str, dict[str, Any]], unique_queues: bool = True) -> Path:
    """Write `jobs.config.json` into `directory`; queue names get a random suffix unless told not to."""
    suffix = uuid.uuid4().hex[:6]
    data = {}
    for name, settings in job_types.items():
        settings = dict(settings)
        settings.setdefault("queue", f"queue_{name}")
        if unique_queues:
            settings["queue"] = f"{settings['queue']}_{suffix}"
        data[name] = settings
    path = directory / "jobs.config.json"
    path.write_text(json.dumps(data, indent=2))
    return path
