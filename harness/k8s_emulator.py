"""A small Kubernetes API server emulator over real HTTP, for the official client to talk to.

It keeps Jobs, Pods, Leases and Secrets in memory and answers the requests the scaler
makes: list with a labelSelector (`k=v`, `k!=v`, `k`, `!k`), create (409
AlreadyExists on a taken name), get, replace (409 on a stale resourceVersion),
JSON merge patch, delete (the options are recorded), and pod logs. Lists are
paginated like the real server's (`limit` and `continue`, 410 Gone for an
expired token). Like the Job controller, it creates a Pending pod for every new
Job (optionally straight into a waiting state such as ImagePullBackOff); with
`linger_pods_on_delete` a deleted Job's pod stays, terminating, as the garbage
collector and the kubelet would leave it for its grace period. Tests can
inject error answers (409/429/500...) for the next N requests, slow the API
down for every client or for one (`client_api` tags a client), from its next
Job create on if they like, move pods
through their phases, conditions and container states, and run it on a clock
of their own. A delayed request whose client has hung up (timed out) before
it is served is dropped, as the real server cancels a request whose
connection closed. `peak_live_jobs` records the most unfinished Jobs there
ever were at once.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client

ROUTE = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[a-z0-9.]+)/v1)/namespaces/(?P<ns>[^/]+)/(?P<kind>jobs|pods|leases|secrets)(?:/(?P<name>[^/]+))?(?P<log>/log)?$"
)
LIST_KINDS = {
    "jobs": ("JobList", "batch/v1"),
    "pods": ("PodList", "v1"),
    "leases": ("LeaseList", "coordination.k8s.io/v1"),
    "secrets": ("SecretList", "v1"),
}
CLIENT_HEADER = "X-Emulator-Client"


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("==", 1) if "==" in term else term.split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what the scaler's strategic/merge patches of Leases amount to)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class KubernetesEmulator:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            "jobs": {},
            "pods": {},
            "leases": {},
            "secrets": {},
        }
        self.requests: list[tuple[str, str]] = []
        self.failures: list[int] = []
        self.logs: dict[str, str] = {}
        self.previous_logs: dict[str, str] = {}
        self.deletes: list[tuple[str, str, dict[str, Any]]] = []
        self.linger_pods_on_delete = False
        #: (reason, message) every new pod's container waits in, e.g. ("ImagePullBackOff", "Back-off pulling ...").
        self.new_pods_waiting: tuple[str, str] | None = None
        #: Seconds every request waits before it is served, and per client tag (`client_api(tag)`).
        self.latency = 0.0
        self.client_latency: dict[str, float] = {}
        #: Per client tag: from its next Job create on (that create included), its requests take this long.
        self.stall_on_create: dict[str, float] = {}
        self.stalls_resolved = 0
        self.dropped = 0
        self.expire_continue_tokens = False
        #: (status, message) every Job create is refused with, e.g. (403, "jobs.batch is forbidden: ...").
        self.refuse_job_creates: tuple[int, str] | None = None
        self.peak_live_jobs = 0
        self.version = 0
        self.lock = threading.Lock()
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                request = self._body()
                tag = self.headers.get(CLIENT_HEADER, "")
                stalled = self.command == "POST" and emulator.stall_if_armed(tag, self.path)
                try:
                    self._serve(tag, request)
                finally:
                    if stalled:
                        with emulator.lock:
                            emulator.stalls_resolved += 1

            def _serve(self, tag: str, request: Any) -> None:
                delay = emulator.client_latency.get(tag, emulator.latency)
                if delay:
                    time.sleep(delay)
                    if self._client_gone():
                        with emulator.lock:
                            emulator.dropped += 1
                        self.close_connection = True
                        return
                status, body = emulator.handle(self.command, self.path, request)
                payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up (a test of timeouts)

            def _client_gone(self) -> bool:
                try:
                    readable, _, _ = select.select([self.connection], [], [], 0)
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length)) if length else None

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def api_client(self) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def client_api(self, tag: str) -> client.ApiClient:
        """A client whose requests carry `tag`, so `client_latency[tag]` slows down only this one."""
        api = self.api_client()
        api.set_default_header(CLIENT_HEADER, tag)
        return api

    def stall_if_armed(self, tag: str, path: str) -> bool:
        """The worst moment for a slow API: a replica's link slows down while its Job create is in flight."""
        with self.lock:
            if tag not in self.stall_on_create or not urlsplit(path).path.endswith("/jobs"):
                return False
            self.client_latency[tag] = self.stall_on_create.pop(tag)
            return True

    def timestamp(self, ago: float = 0.0) -> str:
        return datetime.fromtimestamp(self.clock() - ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def close(self) -> None:
        self.server.shutdown()

    # test controls ---------------------------------------------------------------
    def fail_next(self, *statuses: int) -> None:
        """Answer the next requests with these error statuses, one each."""
        with self.lock:
            self.failures.extend(statuses)

    def names(self, kind: str) -> list[str]:
        with self.lock:
            return sorted(name for (_, name) in self.objects[kind])

    def get(self, kind: str, name: str, namespace: str = "queue-autoscaler") -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[kind][(namespace, name)])

    def set_pod(self, job_name: str, phase: str, unschedulable: str | None = None, since_seconds: float = 0) -> None:
        """Move the pod of `job_name` to `phase`; with `unschedulable`, the scheduler's condition too."""
        with self.lock:
            for pod in self._pods_of(job_name):
                pod["status"]["phase"] = phase
                if phase == "Running":
                    pod["spec"]["nodeName"] = "node-1"
                    pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
                if unschedulable:
                    pod["status"]["conditions"] = [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": unschedulable,
                            "lastTransitionTime": self.timestamp(since_seconds),
                        }
                    ]

    def set_waiting(self, job_name: str, reason: str, message: str = "", since_seconds: float = 0) -> None:
        """The kubelet's view of a Pending pod whose container cannot start (e.g. ImagePullBackOff)."""
        with self.lock:
            for pod in self._pods_of(job_name):
                self._wait(pod, reason, message, since_seconds)

    def crash_loop(self, job_name: str, exit_code: int, message: str = "", log: str = "") -> None:
        """The worker container exited `exit_code` (with `message` as its termination message and `log` as the
        output of that run) and the kubelet waits before restarting it: CrashLoopBackOff, pod phase Running."""
        with self.lock:
            for pod in self._pods_of(job_name):
                pod["status"]["phase"] = "Running"
                self._wait(pod, "CrashLoopBackOff", f"back-off 10s restarting failed container=worker pod={job_name}")
                pod["status"]["containerStatuses"][0]["restartCount"] = 1
                pod["status"]["containerStatuses"][0]["lastState"] = {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Error",
                        "message": message,
                        "finishedAt": self.timestamp(),
                    }
                }
                self.previous_logs[pod["metadata"]["name"]] = log

    def finish_job(
        self, name: str, namespace: str = "queue-autoscaler", exit_code: int = 0, message: str | None = None
    ) -> None:
        """The pod's container exits with `exit_code` (`message`: its termination message); the Job becomes
        Complete (0) or Failed (otherwise)."""
        with self.lock:
            job = self.objects["jobs"][(namespace, name)]
            now = self.timestamp()
            if exit_code == 0:
                job["status"] = {
                    "succeeded": 1,
                    "completionTime": now,
                    "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}],
                }
            else:
                job["status"] = {
                    "failed": 1,
                    "conditions": [
                        {
                            "type": "Failed",
                            "status": "True",
                            "reason": "BackoffLimitExceeded",
                            "message": "Job has reached the specified backoff limit",
                            "lastTransitionTime": now,
                        }
                    ],
                }
            for pod in self._pods_of(name):
                pod["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
                terminated = {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "finishedAt": now,
                }
                if message is not None:
                    terminated["message"] = message
                pod["status"]["containerStatuses"] = [_container_status({"terminated": terminated})]

    def live_jobs(self) -> int:
        """Jobs that exist and have not finished (no Complete or Failed condition)."""
        with self.lock:
            return self._live_jobs()

    def remove_pods(self, job_name: str) -> None:
        """The kubelet has finished terminating a deleted Job's pod."""
        with self.lock:
            for key in [
                key
                for key, pod in self.objects["pods"].items()
                if pod["metadata"]["labels"].get("job-name") == job_name
            ]:
                del self.objects["pods"][key]

    def count(self, method: str, kind: str) -> int:
        """How many requests of `method` reached `kind` (e.g. ("POST", "jobs")), injected failures included."""
        with self.lock:
            return sum(1 for m, path in self.requests if m == method and re.search(rf"/{kind}(/|$)", path))

    def _live_jobs(self) -> int:
        return sum(
            1
            for job in self.objects["jobs"].values()
            if not any(
                c["type"] in ("Complete", "Failed") and c["status"] == "True"
                for c in job.get("status", {}).get("conditions", [])
            )
        )

    def _wait(self, pod: dict[str, Any], reason: str, message: str, since_seconds: float = 0) -> None:
        pod["status"]["startTime"] = self.timestamp(since_seconds)
        pod["status"]["containerStatuses"] = [_container_status({"waiting": {"reason": reason, "message": message}})]

    def _pods_of(self, job_name: str) -> list[dict[str, Any]]:
        return [pod for pod in self.objects["pods"].values() if pod["metadata"]["labels"].get("job-name") == job_name]

    # the API -------------------------------------------------------------------------
    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = urlsplit(path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        with self.lock:
            self.requests.append((method, parts.path))
            if self.failures:
                status = self.failures.pop(0)
                return status, _status(status, "Injected", f"injected {status}")
            route = ROUTE.match(parts.path)
            if route is None:
                return 404, _status(404, "NotFound", parts.path)
            kind, namespace, name = route["kind"], route["ns"], route["name"]
            if route["log"]:
                logs = self.previous_logs if query.get("previous") == "true" else self.logs
                return 200, "\n".join(logs.get(name, "").splitlines()[-int(query.get("tailLines", "200")) :])
            if name is None and method == "GET":
                return self._list(kind, namespace, query)
            if method == "POST":
                return self._create(kind, namespace, body)
            return self._on_object(method, kind, (namespace, name), body, query)

    def _list(self, kind: str, namespace: str, query: dict[str, str]) -> tuple[int, Any]:
        """A page of at most `limit` items in name order, with a continue token when more follow."""
        selector = query.get("labelSelector", "")
        items = sorted(
            (
                (name, obj)
                for (ns, name), obj in self.objects[kind].items()
                if ns == namespace and matches(obj["metadata"].get("labels", {}), selector)
            ),
            key=lambda item: item[0],
        )
        if "continue" in query:
            if self.expire_continue_tokens:
                self.expire_continue_tokens = False
                return 410, _status(410, "Expired", "The provided continue parameter is too old")
            after = json.loads(base64.b64decode(query["continue"]))["after"]
            items = [item for item in items if item[0] > after]
        limit = int(query.get("limit") or 0) or len(items)
        page, more = items[:limit], len(items) > limit
        metadata: dict[str, Any] = {"resourceVersion": str(self.version)}
        if more:
            metadata["continue"] = base64.b64encode(json.dumps({"after": page[-1][0]}).encode()).decode()
            metadata["remainingItemCount"] = len(items) - limit
        list_kind, version = LIST_KINDS[kind]
        return 200, {"kind": list_kind, "apiVersion": version, "metadata": metadata, "items": [obj for _, obj in page]}

    def _on_object(
        self, method: str, kind: str, key: tuple[str, str], body: Any, query: dict[str, str]
    ) -> tuple[int, Any]:
        store = self.objects[kind]
        if key not in store:
            return 404, _status(404, "NotFound", f"{kind} {key[1]} not found")
        if method == "GET":
            return 200, store[key]
        if method == "PATCH":
            self.version += 1
            patched = merge_patch(store[key], body)
            patched["metadata"]["resourceVersion"] = str(self.version)
            store[key] = patched
            return 200, patched
        if method == "PUT":
            if body["metadata"].get("resourceVersion") not in (None, store[key]["metadata"]["resourceVersion"]):
                return 409, _status(409, "Conflict", "the object has been modified")
            self.version += 1
            body["metadata"]["resourceVersion"] = str(self.version)
            store[key] = body
            return 200, body
        if method == "DELETE":
            self.deletes.append((kind, key[1], body or query))
            removed = store.pop(key)
            if kind == "jobs":
                self._collect_pods(key[1])
            return 200, removed
        return 405, _status(405, "MethodNotAllowed", method)

    def _collect_pods(self, job_name: str) -> None:
        """The garbage collector removes a deleted Job's pods (or, lingering, marks them terminating)."""
        for pod_key in [
            k for k, pod in self.objects["pods"].items() if pod["metadata"]["labels"].get("job-name") == job_name
        ]:
            if self.linger_pods_on_delete:
                self.objects["pods"][pod_key]["metadata"]["deletionTimestamp"] = self.timestamp()
            else:
                del self.objects["pods"][pod_key]

    def _create(self, kind: str, namespace: str, body: dict[str, Any]) -> tuple[int, Any]:
        name = body["metadata"]["name"]
        store = self.objects[kind]
        if kind == "jobs" and self.refuse_job_creates:
            status, message = self.refuse_job_creates
            return status, _status(status, "Forbidden" if status == 403 else "Refused", message)
        if (namespace, name) in store:
            return 409, _status(409, "AlreadyExists", f"{kind} {name} already exists")
        self.version += 1
        body["metadata"].update(
            namespace=namespace,
            resourceVersion=str(self.version),
            creationTimestamp=self.timestamp(),
            uid=f"uid-{self.version}",
        )
        store[(namespace, name)] = body
        if kind == "jobs":
            self._start_pod(namespace, name, body["spec"]["template"])
            self.peak_live_jobs = max(self.peak_live_jobs, self._live_jobs())
        return 201, body

    def _start_pod(self, namespace: str, job_name: str, template: dict[str, Any]) -> None:
        """What the Job controller does for a new Job: one Pending pod from its template."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job_name}-pod",
                "namespace": namespace,
                "creationTimestamp": self.timestamp(),
                "labels": {**template["metadata"]["labels"], "job-name": job_name},
                "annotations": dict(template["metadata"].get("annotations", {})),
            },
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Pending"},
        }
        if self.new_pods_waiting:
            self._wait(pod, *self.new_pods_waiting)
        self.objects["pods"][(namespace, pod["metadata"]["name"])] = pod
        self.logs[pod["metadata"]["name"]] = f'{{"event": "worker starting", "worker_id": "{job_name}"}}\n'


def _container_status(state: dict[str, Any]) -> dict[str, Any]:
    return {"name": "worker", "image": "x", "imageID": "", "ready": False, "restartCount": 0, "state": state}
