"""Leader election on a coordination.k8s.io/v1 Lease, so two scaler replicas never both act.

The holder renews the Lease every third of its duration; a standby takes it
over only once `renewTime + leaseDurationSeconds` has passed. Every write
carries the Lease's resourceVersion, so when two replicas race, the API server
accepts one and answers 409 to the other. A replica counts itself leader only
while its last successful renewal is younger than the lease duration, so a
leader cut off from the API server steps down before a standby can take over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scaler.backends.kubernetes import load_client_configuration
from scaler.backends.kubernetes_manifests import ClusterSettings

log = logging.getLogger(__name__)


class LeaseElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str, duration: float = 15.0) -> None:
        self.api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self._renewed_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    @classmethod
    def from_environment(cls) -> LeaseElector:
        load_client_configuration()
        return cls(
            client.ApiClient(),
            ClusterSettings.from_environment().namespace,
            os.environ.get("SCALER_LEASE_NAME", "queue-autoscaler-scaler"),
            os.environ.get("POD_NAME") or socket.gethostname(),
            float(os.environ.get("SCALER_LEASE_SECONDS", "15")),
        )

    def is_leader(self) -> bool:
        return time.monotonic() - self._renewed_at < self.duration

    def start(self) -> LeaseElector:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing and hand the Lease back, so a standby takes over at once."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.is_leader():
            try:
                lease = self.api.read_namespaced_lease(self.name, self.namespace)
                if lease.spec.holder_identity == self.identity:
                    lease.spec.holder_identity = None
                    lease.spec.renew_time = None
                    self.api.replace_namespaced_lease(self.name, self.namespace, lease)
            except ApiException as error:
                log.warning("could not release the Lease: %s", error.reason)
        self._renewed_at = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.try_acquire_or_renew()
            except Exception as error:  # noqa: BLE001 - the elector must keep trying whatever the API does
                log.warning("leader election: %s", error)
            self._stop.wait(self.duration / 3)

    def try_acquire_or_renew(self) -> bool:
        """One election round; True when this replica holds the Lease afterwards."""
        now = datetime.now(timezone.utc)
        was_leader = self.is_leader()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=int(self.duration),
                                        acquire_time=now, renew_time=now),
            )
            return self._write(lambda: self.api.create_namespaced_lease(self.namespace, body), was_leader)
        spec = lease.spec
        held_by_other = spec.holder_identity not in (None, "", self.identity)
        if held_by_other and spec.renew_time is not None:
            expires = spec.renew_time.timestamp() + (spec.lease_duration_seconds or self.duration)
            if expires > now.timestamp():
                if was_leader:
                    log.warning("lost the leadership to %s", spec.holder_identity)
                self._renewed_at = 0.0
                return False
        if spec.holder_identity != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = int(self.duration)
        return self._write(lambda: self.api.replace_namespaced_lease(self.name, self.namespace, lease), was_leader)

    def _write(self, call, was_leader: bool) -> bool:
        try:
            call()
        except ApiException as error:
            if error.status == 409:  # another replica wrote first
                self._renewed_at = 0.0
                return False
            raise
        self._renewed_at = time.monotonic()
        if not was_leader:
            log.info("%s is now the leader (Lease %s/%s)", self.identity, self.namespace, self.name)
        return True
