"""A small Kubernetes API server emulator over real HTTP, for the official client to talk to.

It keeps Jobs, Pods, Leases and Secrets in memory and answers the requests the scaler
makes: list with a labelSelector (`k=v`, `k!=v`, `k`, `!k`), create (409
AlreadyExists on a taken name), get, replace (409 on a stale resourceVersion),
JSON merge patch, delete (the options are recorded), and pod logs. Like the Job
controller, it creates a Pending pod for every new Job; with
`linger_pods_on_delete` a deleted Job's pod stays, terminating, as the garbage
collector and the kubelet would leave it for its grace period. Tests can
inject error answers (409/429/500...) for the next N requests and move pods
through their phases, conditions and container states.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
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


def timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    def __init__(self) -> None:
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            "jobs": {},
            "pods": {},
            "leases": {},
            "secrets": {},
        }
        self.requests: list[tuple[str, str]] = []
        self.failures: list[int] = []
        self.logs: dict[str, str] = {}
        self.deletes: list[tuple[str, str, dict[str, Any]]] = []
        self.linger_pods_on_delete = False
        self.version = 0
        self.lock = threading.Lock()
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                status, body = emulator.handle(self.command, self.path, self._body())
                payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up (a test of timeouts)

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
            for pod in self.objects["pods"].values():
                if pod["metadata"]["labels"].get("job-name") == job_name:
                    pod["status"]["phase"] = phase
                    if phase == "Running":
                        pod["spec"]["nodeName"] = "node-1"
                        pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
                    if unschedulable:
                        since = datetime.now(UTC) - timedelta(seconds=since_seconds)
                        pod["status"]["conditions"] = [
                            {
                                "type": "PodScheduled",
                                "status": "False",
                                "reason": "Unschedulable",
                                "message": unschedulable,
                                "lastTransitionTime": timestamp(since),
                            }
                        ]

    def set_waiting(self, job_name: str, reason: str, message: str = "", since_seconds: float = 0) -> None:
        """The kubelet's view of a Pending pod whose container cannot start (e.g. ImagePullBackOff)."""
        with self.lock:
            for pod in self._pods_of(job_name):
                pod["status"]["startTime"] = timestamp(datetime.now(UTC) - timedelta(seconds=since_seconds))
                pod["status"]["containerStatuses"] = [
                    {
                        "name": "worker",
                        "image": "x",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": reason, "message": message}},
                    }
                ]

    def finish_job(self, name: str, namespace: str = "queue-autoscaler", exit_code: int = 0) -> None:
        """The pod's container exits with `exit_code`; the Job becomes Complete (0) or Failed (otherwise)."""
        with self.lock:
            job = self.objects["jobs"][(namespace, name)]
            now = timestamp()
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
                pod["status"]["containerStatuses"] = [
                    {
                        "name": "worker",
                        "image": "x",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": exit_code,
                                "reason": "Completed" if exit_code == 0 else "Error",
                                "finishedAt": now,
                            }
                        },
                    }
                ]

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

    def _pods_of(self, job_name: str) -> list[dict[str, Any]]:
        return [pod for pod in self.objects["pods"].values() if pod["metadata"]["labels"].get("job-name") == job_name]

    # the API -------------------------------------------------------------------------
    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = urlsplit(path)
        with self.lock:
            self.requests.append((method, parts.path))
            if self.failures:
                status = self.failures.pop(0)
                return status, {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": status,
                    "reason": "Injected",
                    "message": f"injected {status}",
                }
            route = ROUTE.match(parts.path)
            if route is None:
                return 404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": parts.path}
            kind, namespace, name = route["kind"], route["ns"], route["name"]
            store = self.objects[kind]
            if route["log"]:
                lines = int(parse_qs(parts.query).get("tailLines", ["200"])[0])
                return 200, "\n".join(self.logs.get(name, "").splitlines()[-lines:])
            if name is None and method == "GET":
                selector = parse_qs(parts.query).get("labelSelector", [""])[0]
                items = [
                    obj
                    for (ns, _), obj in store.items()
                    if ns == namespace and matches(obj["metadata"].get("labels", {}), selector)
                ]
                list_kind, version = LIST_KINDS[kind]
                return 200, {
                    "kind": list_kind,
                    "apiVersion": version,
                    "metadata": {"resourceVersion": str(self.version)},
                    "items": items,
                }
            if method == "POST":
                return self._create(kind, namespace, body)
            key = (namespace, name)
            if key not in store:
                return 404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": f"{kind} {name} not found"}
            if method == "GET":
                return 200, store[key]
            if method == "PATCH":
                self.version += 1
                patched = merge_patch(store[key], body)
                patched["metadata"]["resourceVersion"] = str(self.version)
                store[key] = patched
                return 200, patched
            if method == "PUT":
                current = store[key]["metadata"]["resourceVersion"]
                if body["metadata"].get("resourceVersion") not in (None, current):
                    return 409, {
                        "kind": "Status",
                        "code": 409,
                        "reason": "Conflict",
                        "message": "the object has been modified",
                    }
                self.version += 1
                body["metadata"]["resourceVersion"] = str(self.version)
                store[key] = body
                return 200, body
            if method == "DELETE":
                self.deletes.append((kind, name, body or dict(parse_qs(parts.query))))
                removed = store.pop(key)
                if kind == "jobs":
                    for pod_key in [
                        k
                        for k, pod in self.objects["pods"].items()
                        if pod["metadata"]["labels"].get("job-name") == name
                    ]:
                        if self.linger_pods_on_delete:
                            self.objects["pods"][pod_key]["metadata"]["deletionTimestamp"] = timestamp()
                        else:
                            del self.objects["pods"][pod_key]
                return 200, removed
        return 405, {"kind": "Status", "code": 405, "reason": "MethodNotAllowed"}

    def _create(self, kind: str, namespace: str, body: dict[str, Any]) -> tuple[int, Any]:
        name = body["metadata"]["name"]
        store = self.objects[kind]
        if (namespace, name) in store:
            return 409, {
                "kind": "Status",
                "code": 409,
                "reason": "AlreadyExists",
                "message": f"{kind} {name} already exists",
            }
        self.version += 1
        body["metadata"].update(
            namespace=namespace,
            resourceVersion=str(self.version),
            creationTimestamp=timestamp(),
            uid=f"uid-{self.version}",
        )
        store[(namespace, name)] = body
        if kind == "jobs":
            template = body["spec"]["template"]
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{name}-pod",
                    "namespace": namespace,
                    "creationTimestamp": timestamp(),
                    "labels": {**template["metadata"]["labels"], "job-name": name},
                    "annotations": dict(template["metadata"].get("annotations", {})),
                },
                "spec": copy.deepcopy(template["spec"]),
                "status": {"phase": "Pending"},
            }
            self.objects["pods"][(namespace, pod["metadata"]["name"])] = pod
            self.logs[pod["metadata"]["name"]] = f'{{"event": "worker starting", "worker_id": "{name}"}}\n'
        return 201, body


@pytest.fixture()
def emulator() -> Iterator[KubernetesEmulator]:
    """A fresh emulated API server for one test (import this fixture into the test module)."""
    created = KubernetesEmulator()
    yield created
    created.close()
