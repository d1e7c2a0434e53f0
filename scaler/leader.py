"""Leader election on a coordination.k8s.io/v1 Lease, so two scaler replicas never both act.

The semantics are client-go's leader election:

- The holder renews the Lease every `retry_period` seconds (default 2 s of a 15 s lease).
- A standby never trusts the holder's clock: it remembers when *it* last saw the
  Lease record change (holder, renewTime), and takes the Lease over only once
  that record has stayed unchanged for `leaseDurationSeconds` by its own
  monotonic clock. Clock skew between nodes therefore cannot cause a takeover.
- Every write carries the Lease's resourceVersion, so when two replicas race
  the API server accepts one and answers 409 Conflict to the other.
- The holder counts itself leader only while its last successful renewal
  started less than `renew_deadline` (two thirds of the lease) ago; a leader
  cut off from the API server steps down a third of a lease before any standby
  can take over.
- The holder acts (creates or deletes Jobs) only on a view of the workers it
  took while leading, and only while that view is younger than the tick
  deadline (half the renew deadline by default): `acting_window()` is asked
  immediately before every write, and bounds the write's own timeout, so no
  write of an old leader can land after a standby may take over (a standby
  waits a whole lease, the old leader acts for at most the renew deadline
  after its last renewal began). A standby that just took over ignores what it
  listed before, which may miss the old leader's last Jobs.
- `stop()` stops acting at once and releases the Lease (empty holder), so a
  standby takes over at its next round instead of after a full lease
  duration (a rolling update). The caller stops its control loop first and
  releases only once the loop has ended (`stop(release=False)` otherwise).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scaler.backends.kubernetes_api import load_client_configuration
from scaler.backends.kubernetes_settings import DEFAULT_LEASE_SECONDS, KubernetesSettings

log = logging.getLogger(__name__)
REQUEST_TIMEOUT = 5


class LeaseElector:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        duration: float = DEFAULT_LEASE_SECONDS,
        retry_period: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick_deadline: float | None = None,
    ) -> None:
        self.api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.renew_deadline = duration * 2 / 3
        self.retry_period = retry_period if retry_period is not None else max(duration / 7.5, 0.1)
        self.clock = clock
        #: How long after a tick's view of the workers was taken it may still act on it.
        self.tick_deadline = tick_deadline if tick_deadline is not None else self.renew_deadline / 2
        if self.tick_deadline >= self.renew_deadline:
            raise ValueError(f"the tick deadline ({self.tick_deadline} s) must be shorter than the renew deadline")
        self._renewed_at: float | None = None  # when the last successful renewal started
        self._term_started: float | None = None  # when the round that won the current leadership started
        self._observed: tuple[Any, ...] | None = None  # the other holder's record as last seen
        self._observed_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    @classmethod
    def from_environment(cls, settings: KubernetesSettings | None = None) -> LeaseElector:
        """The elector `settings` (default: read from the environment) describe, on the cluster's configuration."""
        settings = settings or KubernetesSettings.from_environment()
        load_client_configuration()
        return cls(
            client.ApiClient(),
            settings.cluster.namespace,
            settings.lease_name,
            settings.identity,
            settings.lease_seconds,
            tick_deadline=settings.tick_deadline,
        )

    def is_leader(self) -> bool:
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.renew_deadline

    def now(self) -> float:
        return self.clock()

    def acting_window(self, observed_at: float | None) -> float:
        """Seconds left to act on a view of the workers taken at `observed_at` (by `now()`); <= 0: do not act.

        The view must be taken during the current leadership (an older one may miss the previous leader's last
        writes) and be younger than the tick deadline; the leadership must not be past its renew deadline."""
        renewed_at, term_started = self._renewed_at, self._term_started
        if renewed_at is None or term_started is None or observed_at is None or observed_at <= term_started:
            return 0.0
        return min(renewed_at + self.renew_deadline, observed_at + self.tick_deadline) - self.clock()

    def start(self) -> LeaseElector:
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Stop acting and renewing; with `release`, hand the Lease back so a standby takes over at once. Release
        only once nothing acts any more (the control loop has ended); otherwise the Lease simply expires."""
        was_leader = self.is_leader()
        self._stop.set()
        self._renewed_at = self._term_started = None
        if self._thread.is_alive():
            self._thread.join(timeout=REQUEST_TIMEOUT * 2)
        self._renewed_at = self._term_started = None  # a round that was in flight may have renewed
        if not (was_leader and release):
            return
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT)
                log.info("%s released the Lease %s/%s", self.identity, self.namespace, self.name)
        except Exception as error:  # noqa: BLE001 - the standby takes over after the lease duration anyway
            log.warning("could not release the Lease: %s", error)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.try_acquire_or_renew()
            except Exception as error:  # noqa: BLE001 - the elector must keep trying whatever the API does
                log.warning("leader election: %s", error)
            self._stop.wait(self.retry_period)

    def try_acquire_or_renew(self) -> bool:
        """One election round; True when this replica holds the Lease afterwards."""
        started = self.clock()
        was_leader = self.is_leader()
        now = datetime.now(UTC)
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(
                    holder_identity=self.identity,
                    lease_duration_seconds=int(self.duration),
                    acquire_time=now,
                    renew_time=now,
                    lease_transitions=0,
                ),
            )
            return self._write(
                lambda: self.api.create_namespaced_lease(self.namespace, body, _request_timeout=REQUEST_TIMEOUT),
                started,
                was_leader,
            )
        spec = lease.spec
        holder = spec.holder_identity or ""
        if holder and holder != self.identity:
            record = (holder, spec.renew_time, spec.lease_transitions)
            if record != self._observed:
                self._observed, self._observed_at = record, started
            if started - self._observed_at < (spec.lease_duration_seconds or self.duration):
                if was_leader:
                    log.warning("lost the leadership to %s", holder)
                self._renewed_at = self._term_started = None
                return False
            log.info(
                "the Lease of %s expired (not renewed for %.0f s); taking over", holder, started - self._observed_at
            )
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = int(self.duration)
        return self._write(
            lambda: self.api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT
            ),
            started,
            was_leader,
        )

    def _write(self, call: Callable[[], Any], started: float, was_leader: bool) -> bool:
        try:
            call()
        except ApiException as error:
            if error.status in (409, 422):  # another replica wrote first (stale resourceVersion / create race)
                self._renewed_at = self._term_started = None
                return False
            raise
        if self._stop.is_set():
            return False  # stopped while this round was in flight: never lead again
        if not was_leader or self._term_started is None:
            self._term_started = started
        self._renewed_at = started
        self._observed = None
        if not was_leader:
            log.info("%s is now the leader (Lease %s/%s)", self.identity, self.namespace, self.name)
        return True
