"""Every manifest and rendered Job validates against the Kubernetes schemas; Dockerfiles are sound."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from jobtypes.config import JobType, load_config
from scaler.backends.kubernetes_manifests import ClusterSettings, render_job_manifest
from tests.support.configs import write_config
from tests.support.processes import REPO

K8S_VERSION = "1.33.0"
INFRA = REPO / "infra" / "k8s"
LONG_NAME = "a" * 40 + "-very-long-job-type-name-" + "b" * 35


def validate(manifest: dict) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def infra_documents() -> list[dict]:
    kustomization = yaml.safe_load((INFRA / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization["resources"]:
        documents += [doc for doc in yaml.safe_load_all((INFRA / resource).read_text()) if doc]
    return documents


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((INFRA / "kustomization.yaml").read_text())["resources"])
    present = {path.name for path in INFRA.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("document", infra_documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_infra_manifest_validates_strictly(document: dict) -> None:
    validate(document)


def test_infra_has_the_whole_stack_with_least_privilege() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in infra_documents()}
    assert {("StatefulSet", "rabbitmq"), ("Deployment", "producer"), ("Deployment", "scaler"), ("Role", "scaler"),
            ("RoleBinding", "scaler"), ("ServiceAccount", "scaler"), ("Service", "producer"), ("Service", "scaler")} <= kinds
    role = next(d for d in infra_documents() if d["kind"] == "Role")
    verbs = {(rule["resources"][0], verb) for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs == {("jobs", "list"), ("jobs", "create"), ("jobs", "delete"), ("pods", "list"), ("pods/log", "get"),
                     ("leases", "get"), ("leases", "create"), ("leases", "update")}
    secrets = [d for d in infra_documents() if d["kind"] == "Secret"]
    assert all("guest" not in str(secret["stringData"]) for secret in secrets)


def test_jobs_config_map_as_manage_sh_creates_it_validates() -> None:
    validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "jobs-config", "namespace": "queue-autoscaler"},
              "data": {"jobs.config.json": (REPO / "jobs.config.json").read_text()}})


@pytest.mark.parametrize(
    "job_type",
    [
        *load_config(REPO / "jobs.config.json").job_types.values(),
        JobType(name=LONG_NAME, queue="q_long"),
        JobType(name="gpu-train", queue="q_gpu", resources={"limits": {"nvidia.com/gpu": 2, "memory": "8Gi"}},
                node_selector={"accelerator": "nvidia"}, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]),
        JobType(name="custom", queue="q_custom", command=["python", "-m", "mypkg.worker"]),
    ],
    ids=lambda job: job.name[:20],
)
def test_rendered_jobs_validate_strictly(job_type: JobType) -> None:
    manifest = render_job_manifest(job_type, settings=ClusterSettings())
    validate(manifest)
    assert len(manifest["metadata"]["name"]) <= 63
    for value in manifest["metadata"]["labels"].values():
        assert len(value) <= 63 and re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", value)
    assert manifest["metadata"]["annotations"]["queue-autoscaler.io/job-type"] == job_type.name


def test_render_job_command_prints_the_manifest(tmp_path: Path) -> None:
    config = write_config(tmp_path, {LONG_NAME: {"resources": {"limits": {"nvidia.com/gpu": 1}}}})
    result = subprocess.run([sys.executable, "-m", "scaler", "render-job", LONG_NAME], cwd=REPO, capture_output=True,
                            text=True, env={"JOBS_CONFIG": str(config), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(result.stdout)
    validate(manifest)
    assert manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}


DOCKERFILES = [REPO / "producer" / "Dockerfile", REPO / "scaler" / "Dockerfile",
               REPO / "workers" / "sales" / "Dockerfile", REPO / "workers" / "sleep" / "Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_is_pinned_non_root_and_copies_what_exists(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-bookworm$", text, re.M), "base image pinned to a patch release"
    assert re.search(r"^USER 10001$", text, re.M)
    for source in re.findall(r"^COPY (\S+) ", text, re.M):
        assert list(REPO.glob(source.rstrip("/"))), f"COPY source {source} does not exist"
    pins = dict(re.findall(r"([A-Za-z][A-Za-z0-9_.-]*)==([0-9.]+)", text))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = dict(pin.split("==") for pin in project)
    for package, version in pins.items():
        assert declared.get(package) == version, f"{package}=={version} differs from pyproject.toml"
