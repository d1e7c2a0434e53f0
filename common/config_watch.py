"""Follow `jobs.config.json` while running: pick up edits, survive bad ones.

Operators edit the file (or `kubectl apply` a ConfigMap, which swaps the
mounted file) while the producer and the scaler run. Both call `refresh()`
often; it re-reads the file only when its modification time or size changed,
and an invalid edit keeps the last good config in force while `error` says
what is wrong, so one typo never takes the stack down. An optional `check`
refuses a config that parses but cannot be used the same way (the scaler's
check: a queue whose type or arguments RabbitMQ would refuse to change,
common.queue_check).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from common.config import ConfigError, JobsConfig, load_config

log = logging.getLogger(__name__)


class ConfigWatcher:
    def __init__(self, path: str | Path, check: Callable[[JobsConfig], None] | None = None) -> None:
        self.path = Path(path)
        self.check = check
        self.error: str | None = None
        self.loaded_at: float = 0.0
        self._signature: tuple[float, int] | None = None
        self._config: JobsConfig | None = None
        self.refresh()
        if self._config is None:
            raise ConfigError(self.error or f"{self.path}: no config")

    @property
    def config(self) -> JobsConfig:
        """The last good config (never None after construction)."""
        assert self._config is not None
        return self._config

    def _file_signature(self) -> tuple[float, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_mtime, stat.st_size)

    def refresh(self) -> bool:
        """Reload if the file changed; True when a new config took effect."""
        signature = self._file_signature()
        if signature is not None and signature == self._signature:
            return False
        self._signature = signature
        try:
            config = load_config(self.path)
            if self.check is not None:
                self.check(config)
        except ConfigError as error:
            if str(error) != self.error:
                log.error("jobs config rejected, keeping the last good one: %s", error)
            self.error = str(error)
            return False
        if self._config is not None:
            log.info("jobs config reloaded from %s: %s", self.path, ", ".join(config.job_types))
        self._config = config
        self.error = None
        self.loaded_at = time.time()
        return True
