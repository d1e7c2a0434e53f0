"""The operator's pause and drain settings per job type, kept where a restarted or new leader finds them.

`Controls` is what the web endpoints write and the control loop reads each
tick (thread-safe). Every change is written to a `ControlStore` before it takes
effect, so the set survives a scaler restart and a leader change:

* `FileControlStore`: one JSON file in the scaler's state directory, replaced
  atomically (write a temporary file, fsync, rename); the local backend's.
* `LeaseControlStore`: an annotation on a coordination.k8s.io Lease of its own
  beside the leader-election Lease; every replica can read it, and writes carry
  the Lease's resourceVersion so two writers never lose each other's change.

Every replica re-reads the store every `refresh_seconds` and at once when it
becomes the leader. Retries (of a failing type) are not persisted: they are a
one-off nudge to the current leader.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from common.errors import AutoscalerError
from scaler.policy import Control

log = logging.getLogger(__name__)
ANNOTATION = "queue-autoscaler.io/controls"
REQUEST_TIMEOUT = 5


class ControlStoreError(AutoscalerError):
    """The pause/drain set cannot be read or written; nothing changed."""

    status = 503


class ControlStore(Protocol):
    def load(self) -> dict[str, Control]:
        """Every type with a control other than RUN."""

    def save(self, controls: dict[str, Control]) -> None:
        """Replace the stored set (raises ControlStoreError)."""


def _encode(controls: dict[str, Control]) -> str:
    return json.dumps({name: control.value for name, control in sorted(controls.items())})


def _decode(text: str, where: str) -> dict[str, Control]:
    try:
        data = json.loads(text)
        return {str(name): Control(value) for name, value in data.items() if Control(value) is not Control.RUN}
    except (ValueError, AttributeError) as error:
        raise ControlStoreError(f"{where}: the pause/drain set is not readable: {error}") from error


class MemoryControlStore:
    """Kept in this process only (tests, and a scaler with nowhere to persist)."""

    def __init__(self) -> None:
        self.controls: dict[str, Control] = {}

    def load(self) -> dict[str, Control]:
        return dict(self.controls)

    def save(self, controls: dict[str, Control]) -> None:
        self.controls = dict(controls)


class FileControlStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Control]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise ControlStoreError(f"{self.path}: {error.strerror or error}") from error
        return _decode(text, str(self.path))

    def save(self, controls: dict[str, Control]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("w", encoding="utf-8") as handle:
                handle.write(_encode(controls))
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self.path)
        except OSError as error:
            raise ControlStoreError(
                f"{self.path}: cannot save the pause/drain set: {error.strerror or error}"
            ) from error


class LeaseControlStore:
    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name

    @property
    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def _read(self) -> client.V1Lease | None:
        try:
            return self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status == 404:
                return None
            raise ControlStoreError(f"{self.where}: {error.status} {error.reason}") from error

    def load(self) -> dict[str, Control]:
        lease = self._read()
        annotations = (lease.metadata.annotations or {}) if lease is not None else {}
        return _decode(annotations.get(ANNOTATION, "{}"), self.where)

    def save(self, controls: dict[str, Control]) -> None:
        for _ in range(3):
            lease = self._read()
            try:
                if lease is None:
                    body = client.V1Lease(
                        metadata=client.V1ObjectMeta(
                            name=self.name, namespace=self.namespace, annotations={ANNOTATION: _encode(controls)}
                        ),
                        spec=client.V1LeaseSpec(),
                    )
                    self.api.create_namespaced_lease(self.namespace, body, _request_timeout=REQUEST_TIMEOUT)
                else:
                    lease.metadata.annotations = {**(lease.metadata.annotations or {}), ANNOTATION: _encode(controls)}
                    self.api.replace_namespaced_lease(
                        self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT
                    )
                return
            except ApiException as error:
                if error.status != 409:  # 409: another writer was first; read again and retry
                    raise ControlStoreError(f"{self.where}: {error.status} {error.reason}") from error
        raise ControlStoreError(f"{self.where}: three conflicting writes in a row; try again")


class Controls:
    """The pause/drain set in force plus pending retries, shared by the web threads and the control loop."""

    def __init__(
        self,
        store: ControlStore | None = None,
        refresh_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store or MemoryControlStore()
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.error: str | None = None
        self._lock = threading.Lock()
        self._controls: dict[str, Control] = {}
        self._retries: set[str] = set()
        self._loaded_at: float | None = None
        self._version = 0  # bumped by every set(), so a slow re-read never undoes a newer change
        self.refresh(force=True)

    def set(self, job_type: str, control: Control) -> None:
        """Persist, then apply (raises ControlStoreError and changes nothing when the store fails)."""
        with self._lock:
            controls = {**self._controls, job_type: control}
            if control is Control.RUN:
                del controls[job_type]
            self.store.save(controls)
            self._controls = controls
            self._version += 1
        log.info("%s: %s", job_type, "resumed" if control is Control.RUN else control.value)

    def retry(self, job_type: str) -> None:
        with self._lock:
            self._retries.add(job_type)

    def take_retries(self) -> set[str]:
        with self._lock:
            retries, self._retries = self._retries, set()
            return retries

    def snapshot(self) -> dict[str, Control]:
        with self._lock:
            return dict(self._controls)

    def refresh(self, force: bool = False) -> None:
        """Re-read the store when `refresh_seconds` passed (or `force`); a failing store keeps the last set."""
        now = self.clock()
        if not force and self._loaded_at is not None and now - self._loaded_at < self.refresh_seconds:
            return
        self._loaded_at = now
        version = self._version
        try:
            loaded = self.store.load()
        except ControlStoreError as error:
            if str(error) != self.error:
                log.error("keeping the last pause/drain set: %s", error)
            self.error = str(error)
            return
        self.error = None
        with self._lock:
            if version == self._version:
                self._controls = loaded
