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

from common.config import JobType, load_config
from harness.configs import write_config
from harness.processes import REPO
from scaler.backends.kubernetes_manifests import TYPE_LABEL, ClusterSettings, render_job_manifest, worker_secret
from scaler.deploy_secrets import DEFINITIONS_KEY, DEFINITIONS_SECRET, worker_templates

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
    assert {
        ("StatefulSet", "rabbitmq"),
        ("Deployment", "producer"),
        ("Deployment", "scaler"),
        ("Role", "scaler"),
        ("RoleBinding", "scaler"),
        ("ServiceAccount", "scaler"),
        ("Service", "producer"),
        ("Service", "scaler"),
    } <= kinds
    role = next(d for d in infra_documents() if d["kind"] == "Role" and d["metadata"]["name"] == "scaler")
    verbs = {(rule["resources"][0], verb) for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs == {
        ("jobs", "list"),
        ("jobs", "create"),
        ("jobs", "delete"),
        ("pods", "list"),
        ("pods/log", "get"),
        ("leases", "get"),
        ("leases", "create"),
        ("leases", "update"),
    }
    secrets = [d for d in infra_documents() if d["kind"] == "Secret"]
    assert all("guest" not in str(secret["stringData"]) for secret in secrets)


def test_rabbitmq_is_a_three_node_cluster_that_one_voluntary_disruption_at_a_time_keeps_a_majority() -> None:
    """Three replicas started in parallel, found by the Kubernetes peer discovery plugin (which may read the
    headless Service's endpoints and nothing else), spread over machines, talking to each other through the
    network policy, and a PodDisruptionBudget that lets drains take one node at a time."""
    documents = {(d["kind"], d["metadata"]["name"]): d for d in infra_documents()}
    statefulset = documents[("StatefulSet", "rabbitmq")]["spec"]
    assert (statefulset["replicas"], statefulset["podManagementPolicy"]) == (3, "Parallel")
    pod = statefulset["template"]["spec"]
    assert pod["serviceAccountName"] == "rabbitmq" and pod["topologySpreadConstraints"]
    config = documents[("ConfigMap", "rabbitmq-config")]["data"]
    assert "rabbitmq_peer_discovery_k8s" in config["enabled_plugins"]
    conf = dict(line.split(" = ", 1) for line in config["rabbitmq.conf"].splitlines() if " = " in line)
    headless = documents[("Service", statefulset["serviceName"])]["spec"]
    assert conf["cluster_formation.k8s.service_name"] == statefulset["serviceName"]
    assert conf["cluster_formation.k8s.hostname_suffix"].startswith(f".{statefulset['serviceName']}.queue-autoscaler.")
    assert conf["cluster_partition_handling"] == "pause_minority"
    assert headless["publishNotReadyAddresses"] is True
    assert {port["port"] for port in headless["ports"]} >= {4369, 25672}
    role = documents[("Role", "rabbitmq-peer-discovery")]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["endpoints"], "verbs": ["get"]}]
    binding = documents[("RoleBinding", "rabbitmq-peer-discovery")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rabbitmq"}]
    budget = documents[("PodDisruptionBudget", "rabbitmq")]["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"] == statefulset["selector"]["matchLabels"]
    policy = documents[("NetworkPolicy", "rabbitmq")]["spec"]
    peers = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "rabbitmq"}}}
    assert {"from": [peers], "ports": [{"port": "epmd"}, {"port": "cluster-links"}]} in policy["ingress"]
    assert {"to": [peers], "ports": [{"port": 4369}, {"port": 25672}]} in policy["egress"]


def test_jobs_config_map_as_manage_sh_creates_it_validates() -> None:
    validate(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "jobs-config", "namespace": "queue-autoscaler"},
            "data": {"jobs.config.json": (REPO / "jobs.config.json").read_text()},
        }
    )


@pytest.mark.parametrize(
    "job_type",
    [
        *load_config(REPO / "jobs.config.json").job_types.values(),
        JobType(name=LONG_NAME, queue="q_long"),
        JobType(
            name="gpu-train",
            queue="q_gpu",
            resources={"limits": {"nvidia.com/gpu": 2, "memory": "8Gi"}},
            node_selector={"accelerator": "nvidia"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        ),
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


def test_values_the_scaler_hands_its_workers_go_into_the_env_once_and_stay_valid() -> None:
    """E.g. the type's validated settings as one JSON value; a type's `env` cannot shadow the scaler's entries."""
    job_type = JobType(name="sleep", queue="q_sleep", env={"SLEEP_MS": "20", "RABBITMQ_URL": "amqp://elsewhere"})
    manifest = render_job_manifest(job_type, settings=ClusterSettings())
    validate(manifest)
    env = manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [entry["name"] for entry in env]
    assert sorted(names) == sorted(["SLEEP_MS", "WORKER_ID", "RABBITMQ_URL", "JOBS_CONFIG", "WORKER_JOB_TYPE"])
    by_name = {entry["name"]: entry for entry in env}
    assert JobType.model_validate_json(by_name["WORKER_JOB_TYPE"]["value"]) == job_type
    assert "secretKeyRef" in by_name["RABBITMQ_URL"]["valueFrom"]


def test_render_job_command_prints_the_manifest(tmp_path: Path) -> None:
    config = write_config(tmp_path, {LONG_NAME: {"resources": {"limits": {"nvidia.com/gpu": 1}}}})
    result = subprocess.run(
        [sys.executable, "-m", "scaler", "render-job", LONG_NAME],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"JOBS_CONFIG": str(config), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(result.stdout)
    validate(manifest)
    assert manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}


DOCKERFILES = [
    REPO / "producer" / "Dockerfile",
    REPO / "scaler" / "Dockerfile",
    REPO / "workers" / "sales" / "Dockerfile",
    REPO / "workers" / "sleep" / "Dockerfile",
]


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


# --- consistency of the stack -----------------------------------------------------------------------


def test_references_between_manifests_resolve() -> None:
    """Secrets, keys, ConfigMaps, ServiceAccounts, Service selectors and named ports all exist."""
    documents = infra_documents()
    secrets = {
        d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
        for d in documents
        if d["kind"] == "Secret"
    }
    # ./manage.sh k8s-up creates these from the config (scaler.deploy_secrets)
    configured = load_config(REPO / "jobs.config.json")
    secrets |= {template.name: set(template.values) for template in worker_templates(configured)}
    secrets[DEFINITIONS_SECRET] = {DEFINITIONS_KEY}
    config_maps = {d["metadata"]["name"] for d in documents if d["kind"] == "ConfigMap"} | {
        "jobs-config"
    }  # manage.sh creates jobs-config
    accounts = {d["metadata"]["name"] for d in documents if d["kind"] == "ServiceAccount"}
    workloads = [d for d in documents if d["kind"] in ("Deployment", "StatefulSet")]
    rendered = render_job_manifest(configured.job_types["sleep"], settings=ClusterSettings())
    for name, spec in [(w["metadata"]["name"], w["spec"]["template"]["spec"]) for w in workloads] + [
        ("worker", rendered["spec"]["template"]["spec"])
    ]:
        if "serviceAccountName" in spec:
            assert spec["serviceAccountName"] in accounts, name
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, (name, volume)
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, (name, volume)
        for container in spec["containers"]:
            ports = {port["name"] for port in container.get("ports", [])}
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], set()), (name, ref)
            for probe in ("readinessProbe", "livenessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                assert port is None or port in ports or isinstance(port, int), (name, probe)
    for workload in workloads:
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    for service in (d for d in documents if d["kind"] == "Service"):
        targets = [
            w
            for w in workloads
            if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert targets, f"Service {service['metadata']['name']} selects no workload"
        named = {
            port["name"]
            for w in targets
            for c in w["spec"]["template"]["spec"]["containers"]
            for port in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named, (service["metadata"]["name"], port)
    statefulset = next(w for w in workloads if w["kind"] == "StatefulSet")
    assert statefulset["spec"]["serviceName"] in {d["metadata"]["name"] for d in documents if d["kind"] == "Service"}


def test_backend_defaults_match_the_manifests() -> None:
    """The scaler's defaults (Secret, key, ConfigMap, namespace) are the names infra/k8s creates."""
    settings = ClusterSettings()
    documents = infra_documents()
    kustomization = yaml.safe_load((INFRA / "kustomization.yaml").read_text())
    assert (
        settings.namespace
        == kustomization["namespace"]
        == next(d for d in documents if d["kind"] == "Namespace")["metadata"]["name"]
    )
    for job_type in load_config(REPO / "jobs.config.json").job_types.values():
        [template] = [
            t for t in worker_templates(load_config(REPO / "jobs.config.json")) if t.name.endswith(job_type.name)
        ]
        assert (template.name, set(template.values)) == (worker_secret(job_type, settings), {settings.secret_key})
    assert settings.config_map == "jobs-config"
    scaler = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "scaler")
    container = scaler["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert container["args"] == ["--backend", "kubernetes"] and env["SCALER_HOST"]["value"] == "0.0.0.0"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", "the Lease identity"
    assert env["JOBS_CONFIG"]["value"].startswith(container["volumeMounts"][0]["mountPath"])
    producer = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "producer")
    env = {item["name"]: item for item in producer["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PRODUCER_HOST"]["value"] == "0.0.0.0" and "secretKeyRef" in env["PRODUCER_TOKEN"]["valueFrom"]
    rabbitmq = next(d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rabbitmq-config")
    assert "collect_statistics_interval = 500" in rabbitmq["data"]["rabbitmq.conf"]
    assert "rabbitmq_management" in rabbitmq["data"]["enabled_plugins"]
    for document in documents:
        # PostgreSQL has no Prometheus endpoint of its own (run postgres_exporter beside it if you need one).
        if document["kind"] in ("Deployment", "StatefulSet") and document["metadata"]["name"] != "postgres":
            annotations = document["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"].isdigit()


def test_images_carry_one_version_tag_set_in_the_kustomization() -> None:
    """Our images are untagged in the manifests and tagged once by kustomize `images:` (not latest); the worker
    images of jobs.config.json carry that same tag; manage.sh builds those names with it; others are pinned."""
    manage = (REPO / "manage.sh").read_text()
    built = dict((name, dockerfile) for dockerfile, name in re.findall(r'"(\S+/Dockerfile) (\S+)"', manage))
    tags = {
        image["name"]: image["newTag"] for image in yaml.safe_load((INFRA / "kustomization.yaml").read_text())["images"]
    }
    assert set(tags) == set(built), "every image manage.sh builds gets its tag from the kustomization, and only those"
    assert (
        len(set(tags.values())) == 1
        and "latest" not in tags.values()
        and re.fullmatch(r"\d+\.\d+\.\d+", tags[next(iter(tags))])
    )
    for document in infra_documents():
        if document["kind"] in ("Deployment", "StatefulSet"):
            for container in document["spec"]["template"]["spec"]["containers"]:
                image = container["image"]
                if image in tags:
                    continue  # ours: kustomize sets the tag
                name, _, tag = image.partition(":")
                assert name not in tags, f"{image}: the tag belongs in kustomization.yaml"
                assert tag and tag != "latest" and re.match(r"\d", tag), f"{image}: pin a version"
    for job_type in load_config(REPO / "jobs.config.json").job_types.values():
        name, _, tag = job_type.image.partition(":")
        assert tags.get(name) == tag, f"{job_type.image}: jobs.config.json's tag must be kustomization.yaml's"
    for name, dockerfile in built.items():
        assert (REPO / dockerfile).is_file()
        assert f"{name}:{tags[name]}" in (REPO / dockerfile).read_text(), f"{dockerfile} documents a different tag"


COMPONENT_PACKAGES = {  # import name -> pip distribution
    "pika": "pika",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "multipart": "python-multipart",
    "python_multipart": "python-multipart",
    "prometheus_client": "prometheus-client",
    "pydantic": "pydantic",
    "tenacity": "tenacity",
    "kubernetes": "kubernetes",
    "urllib3": "kubernetes",
    "httpx": "httpx",
    "yaml": "PyYAML",
    "sse_starlette": "sse-starlette",
    "psutil": "psutil",
    "sqlalchemy": "SQLAlchemy",
}


def imported_modules(paths: list[Path]) -> set[str]:
    """Top-level names imported anywhere in these files (functions' lazy imports included)."""
    import ast

    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_installs_every_third_party_package_its_code_imports(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    copied = [REPO / source.rstrip("/") for source in re.findall(r"^COPY (\S+) ", text, re.M)]
    files = [
        path
        for pattern in copied
        for path in (REPO.glob(str(pattern.relative_to(REPO))) if "*" in str(pattern) else [pattern])
        for path in ([path] if path.is_file() else path.rglob("*.py"))
        if path.suffix == ".py"
    ]
    local = {"common", "producer", "scaler", "uploads", "workers"}
    copied_packages = {path.relative_to(REPO).parts[0] for path in files}
    third_party = {name for name in imported_modules(files) - local - set(sys.stdlib_module_names)}
    installed = {name.lower() for name in re.findall(r"([A-Za-z][A-Za-z0-9_.-]*)==[0-9.]+", text)}
    missing = {name for name in third_party if COMPONENT_PACKAGES.get(name, name).lower() not in installed}
    assert not missing, f"{dockerfile.relative_to(REPO)} does not install {missing}"
    imported_local = imported_modules(files) & local
    assert imported_local <= copied_packages, f"imports {imported_local - copied_packages} that the image does not copy"


def test_the_deploy_guide_examples_are_valid() -> None:
    """docs/kubernetes.md: its job-type example loads, its overlay parses and names what exists."""
    import json
    import textwrap

    guide = (REPO / "docs" / "kubernetes.md").read_text()
    blocks = re.findall(r"```(json|yaml)\n(.*?)```", guide, re.S)
    [json_example] = [body for kind, body in blocks if kind == "json"]
    name, settings = next(iter(json.loads("{" + json_example.strip() + "}").items()))
    job_type = JobType(name=name, **settings)
    validate(render_job_manifest(job_type, settings=ClusterSettings()))
    [overlay] = [yaml.safe_load(textwrap.dedent(body)) for kind, body in blocks if kind == "yaml"]
    assert overlay["resources"] == ["../../infra/k8s"]
    images = {
        c["image"].split(":")[0]
        for d in infra_documents()
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert {image["name"] for image in overlay["images"]} == images
    deleted = {
        yaml.safe_load(p["patch"])["metadata"]["name"]
        for p in overlay["patches"]
        if "$patch: delete" in p.get("patch", "")
    }
    assert deleted == {d["metadata"]["name"] for d in infra_documents() if d["kind"] == "Secret"}
    for command in re.findall(r"\./manage\.sh ([a-z0-9-]+)", guide):
        assert re.search(rf"^\s+{command}\)", (REPO / "manage.sh").read_text(), re.M), (
            f"./manage.sh {command} does not exist"
        )


def test_long_type_names_stay_distinct_when_shortened() -> None:
    """Two 100-character names that differ only at the end get different Job names and type labels."""
    first, second = JobType(name=LONG_NAME, queue="q1"), JobType(name=LONG_NAME[:-1] + "c", queue="q2")
    one, other = (render_job_manifest(t, settings=ClusterSettings()) for t in (first, second))
    assert one["metadata"]["labels"][TYPE_LABEL] != other["metadata"]["labels"][TYPE_LABEL]
    assert len(one["metadata"]["labels"][TYPE_LABEL]) <= 63
    names = {render_job_manifest(first, settings=ClusterSettings())["metadata"]["name"] for _ in range(50)}
    assert len(names) == 50 and all(
        len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) for name in names
    )
