"""Every pod of the stack, the worker Jobs the scaler renders included, meets the "restricted" Pod Security
Standard (tests/support/pod_security.py, written from the Kubernetes document), on a read-only root filesystem
that is written only where an emptyDir or the data volume is mounted; metrics are scraped on a port of their own.
"""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from common.config import JobType, load_config
from harness.broker import Broker
from harness.processes import REPO, free_port
from harness.stack import Stack
from harness.waiting import wait_until
from scaler.backends.kubernetes_manifests import ClusterSettings, render_job_manifest
from tests.support import pod_security
from tests.test_k8s_manifests import LONG_NAME, infra_documents

#: A type with everything a config can put into its pod: a custom command, a node selector, tolerations.
EVERYTHING = JobType(
    name=LONG_NAME,
    queue="q",
    command=["python", "-m", "workers", "x"],
    node_selector={"pool": "batch"},
    tolerations=[{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
    env={"A": "1"},
)


def workloads() -> list[tuple[str, dict, dict]]:
    """(name, pod template metadata, pod spec) of every workload in infra/k8s and of rendered worker Jobs."""
    found = [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["metadata"], d["spec"]["template"]["spec"])
        for d in infra_documents()
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    ]
    types = [*load_config(REPO / "jobs.config.json").job_types.values(), EVERYTHING]
    for job_type in types:
        template = render_job_manifest(job_type, settings=ClusterSettings())["spec"]["template"]
        found.append((f"Job/{job_type.name[:20]}", template["metadata"], template["spec"]))
    return found


@pytest.mark.parametrize("name,metadata,spec", workloads(), ids=[name for name, _, _ in workloads()])
def test_every_pod_meets_the_restricted_profile(name: str, metadata: dict, spec: dict) -> None:
    assert pod_security.violations(spec, metadata.get("annotations")) == {}


@pytest.mark.parametrize("name,metadata,spec", workloads(), ids=[name for name, _, _ in workloads()])
def test_every_container_has_a_read_only_root_and_writes_only_to_emptydirs_or_its_data(
    name: str, metadata: dict, spec: dict
) -> None:
    kinds = {volume["name"]: set(volume) - {"name"} for volume in spec.get("volumes", [])}
    for container in pod_security.containers(spec):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, container["name"]
        for mount in container.get("volumeMounts", []):
            if not mount.get("readOnly"):
                # a mount of no listed volume is the StatefulSet's volumeClaimTemplate (the broker's or database's data)
                assert kinds.get(mount["name"], {"emptyDir"}) == {"emptyDir"}, (container["name"], mount)
    for volume in spec.get("volumes", []):
        if "emptyDir" in volume:
            assert volume["emptyDir"].get("sizeLimit"), f"{name}: emptyDir {volume['name']} without a size limit"


def test_a_worker_job_writes_to_tmp_only() -> None:
    spec = render_job_manifest(EVERYTHING, settings=ClusterSettings())["spec"]["template"]["spec"]
    [container] = spec["containers"]
    writable = [mount["mountPath"] for mount in container["volumeMounts"] if not mount.get("readOnly")]
    assert writable == ["/tmp"]


def _set(path: str, value) -> Callable[[dict], None]:
    """A mutation setting `path` (dots; a number indexes a list) of a pod spec to `value`."""

    def mutate(spec: dict) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _drop(path: str) -> Callable[[dict], None]:
    def mutate(spec: dict) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        del node[last]

    return mutate


BREAKS = {
    "host_process": _set("securityContext.windowsOptions.hostProcess", True),
    "host_namespaces": _set("hostPID", True),
    "privileged": _set("containers.0.securityContext.privileged", True),
    "added_capabilities": _set("containers.0.securityContext.capabilities.add", ["SYS_ADMIN"]),
    "host_path_volumes": _set("volumes.0", {"name": "host", "hostPath": {"path": "/"}}),
    "host_ports": _set("containers.0.ports", [{"containerPort": 80, "hostPort": 80}]),
    "app_armor": _set("securityContext.appArmorProfile", {"type": "Unconfined"}),
    "se_linux": _set("securityContext.seLinuxOptions", {"type": "spc_t"}),
    "proc_mount": _set("containers.0.securityContext.procMount", "Unmasked"),
    "unconfined_seccomp": _set("containers.0.securityContext.seccompProfile", {"type": "Unconfined"}),
    "sysctls": _set("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]),
    "volume_types": _set("volumes.0", {"name": "nfs", "nfs": {"server": "x", "path": "/"}}),
    "privilege_escalation": _drop("containers.0.securityContext.allowPrivilegeEscalation"),
    "running_as_non_root": _set("containers.0.securityContext.runAsNonRoot", False),
    "running_as_non_root_user": _set("containers.0.securityContext.runAsUser", 0),
    "seccomp": _drop("containers.0.securityContext.seccompProfile"),
    "capabilities": _set("containers.0.securityContext.capabilities", {"drop": ["NET_RAW"]}),
}


#: Where the restricted profile tightens a baseline control, breaking the baseline one breaks both.
IMPLIED = {
    "added_capabilities": {"capabilities"},
    "unconfined_seccomp": {"seccomp"},
    "host_path_volumes": {"volume_types"},
}


@pytest.mark.parametrize("control", BREAKS)
def test_the_checker_catches_a_worker_job_that_breaks_each_control(control: str) -> None:
    """Each control fails on a rendered worker pod broken in just that way (and the others stay quiet, where the
    standard does not tie them together)."""
    spec = copy.deepcopy(render_job_manifest(EVERYTHING, settings=ClusterSettings())["spec"]["template"]["spec"])
    if control == "seccomp":
        del spec["securityContext"]["seccompProfile"]  # the pod's profile would otherwise cover the container
    BREAKS[control](spec)
    found = pod_security.violations(spec)
    assert control in found, found
    assert set(found) <= {control} | IMPLIED.get(control, set()), found


def test_scrapes_go_to_a_metrics_port_only_the_monitoring_namespace_reaches() -> None:
    documents = infra_documents()
    policies = {d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "NetworkPolicy"}
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    for workload in (d for d in documents if d["kind"] == "Deployment"):
        name, template = workload["metadata"]["name"], workload["spec"]["template"]
        [container] = template["spec"]["containers"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"]) == env["METRICS_PORT"]
        metric_rules = [rule for rule in policies[name]["ingress"] if {"port": "metrics"} in rule.get("ports", [])]
        assert metric_rules == [
            {"from": [{"namespaceSelector": {"matchLabels": monitoring}}], "ports": [{"port": "metrics"}]}
        ]


def test_the_metrics_port_serves_metrics_without_the_token(broker: Broker, tmp_path: Path) -> None:
    stack = Stack(broker, tmp_path, {"t": {"threshold": 1}}, env={"METRICS_PORT": str(free_port())})
    try:
        stack.start_producer()
        url = f"http://127.0.0.1:{stack.env['METRICS_PORT']}/metrics"
        answer = wait_until(lambda: httpx.get(url, timeout=5), timeout=10, what="the metrics port")
        assert answer.status_code == 200 and "producer_uploads_total" in answer.text
    finally:
        stack.stop()


def test_network_policies_give_every_component_egress_rules_and_workers_only_amqp() -> None:
    documents = infra_documents()
    policies = [d["spec"] for d in documents if d["kind"] == "NetworkPolicy"]
    default_deny = [p for p in policies if p["podSelector"] == {} and set(p["policyTypes"]) == {"Ingress", "Egress"}]
    assert default_deny and all(not p.get("ingress") and not p.get("egress") for p in default_deny)
    labels = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in documents
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    worker = render_job_manifest(EVERYTHING, settings=ClusterSettings())["spec"]["template"]["metadata"]["labels"]
    labels["worker"] = worker
    for name, pod in labels.items():
        own = [p for p in policies if p["podSelector"] and p["podSelector"]["matchLabels"].items() <= pod.items()]
        assert any("Egress" in p["policyTypes"] for p in own), f"{name} has no egress rules of its own"
    [workers] = [
        p for p in policies if p["podSelector"].get("matchLabels", {}).items() <= worker.items() and p["podSelector"]
    ]
    assert workers["ingress"] == []
    assert workers["egress"] == [
        {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "rabbitmq"}}}], "ports": [{"port": 5672}]}
    ]
    [rabbitmq] = [p for p in policies if p["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": "rabbitmq"}]
    management = [rule for rule in rabbitmq["ingress"] if {"port": "management"} in rule["ports"]]
    assert management == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "scaler"}}}],
            "ports": [{"port": "management"}],
        }
    ]


def test_dockerfiles_run_as_the_uid_the_pods_run_as() -> None:
    for dockerfile in [
        REPO / "producer" / "Dockerfile",
        REPO / "scaler" / "Dockerfile",
        *REPO.glob("workers/*/Dockerfile"),
    ]:
        text = dockerfile.read_text()
        assert "USER 10001\n" in text and "--uid 10001 --user-group" in text, dockerfile
    for name, _, spec in workloads():
        if name.startswith(("Job/", "Deployment/")):
            assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (10001, 10001)


def test_the_namespace_enforces_the_restricted_level() -> None:
    [namespace] = [d for d in infra_documents() if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_kustomize_renders_every_image_with_its_version_tag() -> None:
    """What `kubectl kustomize infra/k8s` (as ./manage.sh k8s-up runs it) gives the cluster: no untagged or latest
    image anywhere."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "infra" / "k8s")], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    images = [
        container["image"]
        for document in yaml.safe_load_all(rendered)
        if document and document["kind"] in ("Deployment", "StatefulSet")
        for container in document["spec"]["template"]["spec"]["containers"]
    ]
    assert images and all(re.fullmatch(r"[\w./-]+:\d[\w.-]*", image) for image in images), images
