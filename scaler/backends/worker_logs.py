"""Local workers' log files, kept within bounds.

Every worker writes one file, `<worker_id>.log`, for as long as it runs; a
crash loop starts hundreds of workers an hour and a busy worker writes a line
per row. So, once every few seconds:

* a live worker's log that grew past `log_max_bytes` is cut like logrotate's
  copytruncate: its content moves to `<log>.1` (replacing the previous one)
  and the file is emptied; the worker writes in append mode, so it carries on
  at the start of the emptied file;
* of the finished workers' logs of each job type, only the newest
  `logs_per_type` are kept; older ones (with their `.1`) are deleted.

A worker id starts with its type's name (at most 40 characters), so that is
how logs are grouped by type; a log that does not look like a worker's is
left alone. One type's worst case is therefore about
`(live workers + logs_per_type) x 2 x log_max_bytes`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from scaler.backends.local_settings import LocalSettings

log = logging.getLogger(__name__)
WORKER_LOG = re.compile(r"^(?P<type>.+)-\d{6}-[0-9a-f]{4}\.log$")
SEGMENT_SUFFIX = ".1"


class WorkerLogs:
    def __init__(self, directory: Path, settings: LocalSettings) -> None:
        self.directory = directory
        self.settings = settings
        self._swept_at = 0.0

    def path_for(self, worker_id: str) -> Path:
        return self.directory / f"{Path(worker_id).name}.log"

    def maybe_sweep(self, live_worker_ids: Iterable[str]) -> None:
        """`sweep` at most once every `log_sweep_seconds`."""
        now = time.monotonic()
        if now - self._swept_at >= self.settings.log_sweep_seconds:
            self._swept_at = now
            self.sweep(set(live_worker_ids))

    def sweep(self, live: set[str]) -> None:
        finished: dict[str, list[tuple[float, Path]]] = defaultdict(list)
        for path in self.directory.glob("*.log"):
            match = WORKER_LOG.match(path.name)
            try:
                if path.stem in live:
                    self._cut_if_large(path)
                elif match:
                    finished[match["type"]].append((path.stat().st_mtime, path))
            except OSError:
                continue  # deleted meanwhile
        for logs in finished.values():
            for _, path in sorted(logs, reverse=True)[self.settings.logs_per_type :]:
                path.unlink(missing_ok=True)
                _segment(path).unlink(missing_ok=True)

    def _cut_if_large(self, path: Path) -> None:
        if path.stat().st_size <= self.settings.log_max_bytes:
            return
        shutil.copyfile(path, _segment(path))
        os.truncate(path, 0)
        log.info(
            "worker log %s passed %d bytes: moved to %s", path.name, self.settings.log_max_bytes, _segment(path).name
        )


def _segment(path: Path) -> Path:
    return path.with_name(path.name + SEGMENT_SUFFIX)
