"""No public secrets in Kubernetes: placeholders are refused, real values are generated, RabbitMQ is fenced in.

`./manage.sh k8s-up` and `python -m scaler.deploy_secrets` run as processes
against the emulated API server (real HTTP, the official client, a kubeconfig
like any cluster's).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from kubernetes import client

from jobtypes.config import JobType
from scaler.backends.kubernetes_manifests import ClusterSettings, render_job_manifest
from scaler.deploy_secrets import load_templates
from tests.support.k8s_emulator import KubernetesEmulator, emulator  # noqa: F401 - the fixture
from tests.support.processes import REPO
from tests.test_k8s_manifests import infra_documents

NAMESPACE = "queue-autoscaler"
HEX48 = re.compile(r"^[0-9a-f]{48}$")


def kubeconfig(directory: Path, server: str) -> Path:
    path = directory / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "test"}}],
                "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}],
                "current-context": "emulator",
            }
        )
    )
    return path


def run(args: list[str], kube: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kube), "K8S_NAMESPACE": NAMESPACE}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def secrets_in(emulator: KubernetesEmulator) -> dict[str, dict[str, str]]:
    with emulator.lock:
        stored = {name: obj for (ns, name), obj in emulator.objects["secrets"].items() if ns == NAMESPACE}
    return {name: {k: base64.b64decode(v).decode() for k, v in obj["data"].items()} for name, obj in stored.items()}


def create_secret(emulator: KubernetesEmulator, name: str, values: dict[str, str]) -> None:
    data = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
    api = client.CoreV1Api(emulator.api_client())
    api.create_namespaced_secret(NAMESPACE, client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=data))


def writes(emulator: KubernetesEmulator) -> int:
    return sum(emulator.count(method, "secrets") for method in ("POST", "PUT", "PATCH", "DELETE"))


def test_k8s_up_refuses_to_deploy_while_a_secret_holds_a_placeholder(emulator: KubernetesEmulator, tmp_path) -> None:
    """Someone ran `kubectl apply -k infra/k8s` by hand: the example placeholders are in the cluster."""
    example = {template.name: template.values for template in load_templates()}
    create_secret(emulator, "queue-autoscaler-secrets", example["queue-autoscaler-secrets"])
    before = writes(emulator)
    result = run(["./manage.sh", "k8s-up"], kubeconfig(tmp_path, emulator.url))
    assert result.returncode != 0
    assert "'queue-autoscaler-secrets'" in result.stderr and "placeholder" in result.stderr
    assert f"kubectl -n {NAMESPACE} delete secret queue-autoscaler-secrets" in result.stderr
    assert "not deploying" in result.stderr
    assert writes(emulator) == before, "nothing was written to the cluster"
    assert secrets_in(emulator)["queue-autoscaler-secrets"] == example["queue-autoscaler-secrets"]


def test_ensure_generates_consistent_random_values_and_keeps_them(emulator: KubernetesEmulator, tmp_path) -> None:
    kube = kubeconfig(tmp_path, emulator.url)
    first = run([sys.executable, "-m", "scaler.deploy_secrets", "ensure"], kube)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("created Secret") == 3
    values = secrets_in(emulator)
    credentials, app, postgres = (
        values["rabbitmq-credentials"],
        values["queue-autoscaler-secrets"],
        values["postgres-credentials"],
    )
    assert "PLACEHOLDER" not in str(values)
    assert credentials["username"] == "autoscaler"
    for secret in (credentials["password"], credentials["erlang-cookie"], app["producer-token"]):
        assert HEX48.match(secret)
    assert len({credentials["password"], credentials["erlang-cookie"], app["producer-token"]}) == 3
    assert app["rabbitmq-url"] == f"amqp://autoscaler:{credentials['password']}@rabbitmq:5672/%2F"
    assert app["rabbitmq-api-url"] == f"http://autoscaler:{credentials['password']}@rabbitmq:15672/api"
    assert (
        app["uploads-database-url"] == f"postgresql://autoscaler:{postgres['POSTGRES_PASSWORD']}@postgres:5432/uploads"
    )

    again = run([sys.executable, "-m", "scaler.deploy_secrets", "ensure"], kube)
    assert again.returncode == 0 and again.stderr == ""
    assert secrets_in(emulator) == values, "a second run changes nothing (RabbitMQ keeps its first password)"

    # An older deploy without the uploads database URL: the key is added, with the password Postgres has.
    with emulator.lock:
        del emulator.objects["secrets"][(NAMESPACE, "queue-autoscaler-secrets")]["data"]["uploads-database-url"]
    upgrade = run([sys.executable, "-m", "scaler.deploy_secrets", "ensure"], kube)
    assert upgrade.returncode == 0 and "added uploads-database-url" in upgrade.stderr
    assert secrets_in(emulator) == values


def test_strip_keeps_everything_but_the_secrets() -> None:
    documents = infra_documents()
    result = subprocess.run(
        [sys.executable, "-m", "scaler.deploy_secrets", "strip"],
        input=yaml.safe_dump_all(documents),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    kept = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert kept == [doc for doc in documents if doc["kind"] != "Secret"]


def test_manifests_ship_no_usable_secret_value() -> None:
    for secret in (d for d in infra_documents() if d["kind"] == "Secret"):
        for key, value in secret["stringData"].items():
            assert "PLACEHOLDER-" in value or key == "username", (secret["metadata"]["name"], key)


def test_rabbitmq_refuses_to_start_with_a_placeholder_password_or_cookie(tmp_path) -> None:
    """The container's command, run here with sh: placeholders stop it; real values reach the image's entrypoint."""
    rabbitmq = next(d for d in infra_documents() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "rabbitmq")
    command = rabbitmq["spec"]["template"]["spec"]["containers"][0]["command"]
    real = {"RABBITMQ_DEFAULT_PASS": "f" * 48, "RABBITMQ_ERLANG_COOKIE": "e" * 48, "PATH": str(tmp_path)}
    (tmp_path / "docker-entrypoint.sh").write_text('#!/bin/sh\necho entrypoint "$@"\n')
    (tmp_path / "docker-entrypoint.sh").chmod(0o755)
    for placeholder in ("RABBITMQ_DEFAULT_PASS", "RABBITMQ_ERLANG_COOKIE"):
        env = {**real, placeholder: "PLACEHOLDER-x"}
        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=10)
        assert refused.returncode == 1 and "placeholders" in refused.stderr
    started = subprocess.run(command, env=real, capture_output=True, text=True, timeout=10)
    assert started.returncode == 0 and started.stdout == "entrypoint rabbitmq-server\n"


def test_only_producer_scaler_and_workers_reach_rabbitmq() -> None:
    documents = infra_documents()
    [policy] = [d for d in documents if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "rabbitmq"]
    rabbitmq = next(d for d in documents if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "rabbitmq")
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items()
        <= rabbitmq["spec"]["template"]["metadata"]["labels"].items()
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    [peer] = rule["from"]
    [expression] = peer["podSelector"]["matchExpressions"]
    allowed = set(expression["values"])
    clients = [
        d["spec"]["template"]["metadata"]["labels"]
        for d in documents
        if d["kind"] == "Deployment" and d["metadata"]["name"] in ("producer", "scaler")
    ]
    worker = render_job_manifest(JobType(name="sales", queue="queue_sales"), settings=ClusterSettings())
    clients.append(worker["spec"]["template"]["metadata"]["labels"])
    assert {labels[expression["key"]] for labels in clients} == allowed
    ports = {port["name"] for port in rabbitmq["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {port["port"] for port in rule["ports"]} == {"amqp", "management"} <= ports


def test_services_are_cluster_internal_and_auth_is_on() -> None:
    documents = infra_documents()
    assert all(d["spec"].get("type") == "ClusterIP" for d in documents if d["kind"] == "Service")
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    for name in ("producer", "scaler"):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        env = {item["name"]: item for item in container["env"]}
        assert env["AUTH_ALLOW_LOOPBACK"]["value"] == "false", name
        assert env["PRODUCER_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "queue-autoscaler-secrets",
            "key": "producer-token",
        }
    producer = deployments["producer"]["spec"]["template"]["spec"]["containers"][0]
    assert producer["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert producer["readinessProbe"]["httpGet"]["path"] == "/readyz"
