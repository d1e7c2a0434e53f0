"""A small Kubernetes API server emulator over real HTTP, for the official client to talk to.

It keeps Jobs, Pods and Leases in memory and answers the requests the scaler
makes: list with a labelSelector, create (409 AlreadyExists on a taken name),
get, replace (409 on a stale resourceVersion), delete, and pod logs. Like the
Job controller, it creates a Pending pod for every new Job. Tests can inject
error answers for the next requests and move pods through their phases.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client

ROUTE = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[a-z0-9.]+)/v1)/namespaces/(?P<ns>[^/]+)/(?P<kind>jobs|pods|leases)(?:/(?P<name>[^/]+))?(?P<log>/log)?$"
)
LIST_KINDS = {"jobs": ("JobList", "batch/v1"), "pods": ("PodList", "v1"), "leases": ("LeaseList", "coordination.k8s.io/v1")}


def timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")


def matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class KubernetesEmulator:
    def __init__(self) -> None:
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {"jobs": {}, "pods": {}, "leases": {}}
        self.requests: list[tuple[str, str]] = []
        self.failures: list[int] = []
        self.logs: dict[str, str] = {}
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
                self.wfile.write(payload)

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
                    if unschedulable:
                        since = datetime.now(timezone.utc) - timedelta(seconds=since_seconds)
                        pod["status"]["conditions"] = [{
                            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": unschedulable, "lastTransitionTime": timestamp(since),
                        }]

    def finish_job(self, name: str, namespace: str = "queue-autoscaler") -> None:
        with self.lock:
            job = self.objects["jobs"][(namespace, name)]
            job["status"] = {"succeeded": 1, "completionTime": timestamp()}

    # the API -------------------------------------------------------------------------
    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = urlsplit(path)
        with self.lock:
            self.requests.append((method, parts.path))
            if self.failures:
                status = self.failures.pop(0)
                return status, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status,
                                "reason": "Injected", "message": f"injected {status}"}
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
                items = [obj for (ns, _), obj in store.items() if ns == namespace and matches(obj["metadata"].get("labels", {}), selector)]
                list_kind, version = LIST_KINDS[kind]
                return 200, {"kind": list_kind, "apiVersion": version, "metadata": {"resourceVersion": str(self.version)}, "items": items}
            if method == "POST":
                return self._create(kind, namespace, body)
            key = (namespace, name)
            if key not in store:
                return 404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": f"{kind} {name} not found"}
            if method == "GET":
                return 200, store[key]
            if method == "PUT":
                current = store[key]["metadata"]["resourceVersion"]
                if body["metadata"].get("resourceVersion") not in (None, current):
                    return 409, {"kind": "Status", "code": 409, "reason": "Conflict", "message": "the object has been modified"}
                self.version += 1
                body["metadata"]["resourceVersion"] = str(self.version)
                store[key] = body
                return 200, body
            if method == "DELETE":
                removed = store.pop(key)
                if kind == "jobs":
                    for pod_key in [k for k, pod in self.objects["pods"].items() if pod["metadata"]["labels"].get("job-name") == name]:
                        del self.objects["pods"][pod_key]
                return 200, removed
        return 405, {"kind": "Status", "code": 405, "reason": "MethodNotAllowed"}

    def _create(self, kind: str, namespace: str, body: dict[str, Any]) -> tuple[int, Any]:
        name = body["metadata"]["name"]
        store = self.objects[kind]
        if (namespace, name) in store:
            return 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists", "message": f"{kind} {name} already exists"}
        self.version += 1
        body["metadata"].update(namespace=namespace, resourceVersion=str(self.version), creationTimestamp=timestamp(), uid=f"uid-{self.version}")
        store[(namespace, name)] = body
        if kind == "jobs":
            template = body["spec"]["template"]
            pod = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{name}-pod", "namespace": namespace, "creationTimestamp": timestamp(),
                             "labels": {**template["metadata"]["labels"], "job-name": name}},
                "spec": template["spec"],
                "status": {"phase": "Pending"},
            }
            self.objects["pods"][(namespace, pod["metadata"]["name"])] = pod
            self.logs[pod["metadata"]["name"]] = f'{{"event": "worker starting", "worker_id": "{name}"}}\n'
        return 201, body
