"""No public secrets in Kubernetes: placeholders are refused, real values are generated, RabbitMQ is fenced in.

`./manage.sh k8s-up` and `python -m scaler.deploy_secrets` run as processes
against the emulated API server (real HTTP, the official client, a kubeconfig
like any cluster's).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pika
import yaml
from kubernetes import client

from common.config import JobType, load_config
from harness.broker import API, AUTH, Broker
from harness.k8s_emulator import KubernetesEmulator
from harness.processes import REPO
from scaler.backends.kubernetes_manifests import ClusterSettings, render_job_manifest
from scaler.broker_users import Role, broker_users, definitions, delete, new_password, with_credentials
from scaler.deploy_secrets import load_templates
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
    types = load_config(REPO / "jobs.config.json").job_types
    # the five of secrets.yaml, one per job type's workers, the broker's definitions
    assert first.stderr.count("created Secret") == 5 + len(types) + 1
    values = secrets_in(emulator)
    credentials, app, postgres = (
        values["rabbitmq-credentials"],
        values["queue-autoscaler-secrets"],
        values["postgres-credentials"],
    )
    assert "PLACEHOLDER" not in str(values)
    assert credentials["username"] == "autoscaler"
    urls = {
        "producer": values["rabbitmq-producer"]["url"],
        "scaler": values["rabbitmq-scaler"]["url"],
        **{f"worker-{name}": values[f"rabbitmq-worker-{name}"]["url"] for name in types},
    }
    passwords = {}
    for role, url in urls.items():
        match = re.fullmatch(rf"amqp://autoscaler-{role}:([0-9a-f]{{48}})@rabbitmq:5672/%2F", url)
        assert match, url
        passwords[f"autoscaler-{role}"] = match.group(1)
    scaler_password = passwords["autoscaler-scaler"]
    assert values["rabbitmq-scaler"]["api-url"] == f"http://autoscaler-scaler:{scaler_password}@rabbitmq:15672/api"
    generated = [credentials["password"], credentials["erlang-cookie"], app["producer-token"], *passwords.values()]
    assert all(HEX48.match(secret) for secret in generated) and len(set(generated)) == len(generated)
    assert "rabbitmq-url" not in app and "rabbitmq-api-url" not in app, "no component gets the administrator"
    assert (
        app["uploads-database-url"] == f"postgresql://autoscaler:{postgres['POSTGRES_PASSWORD']}@postgres:5432/uploads"
    )
    definitions = json.loads(values["rabbitmq-definitions"]["definitions.json"])
    users = {user["name"]: user for user in definitions["users"]}
    assert set(users) == {"autoscaler", *passwords}
    assert users["autoscaler"]["tags"] == ["administrator"] and users["autoscaler-scaler"]["tags"] == ["monitoring"]
    for name, password in [("autoscaler", credentials["password"]), *passwords.items()]:
        salted = base64.b64decode(users[name]["password_hash"])
        assert hashlib.sha256(salted[:4] + password.encode()).digest() == salted[4:], name

    again = run([sys.executable, "-m", "scaler.deploy_secrets", "ensure"], kube)
    assert again.returncode == 0 and again.stderr == ""
    assert secrets_in(emulator) == values, "a second run changes nothing (RabbitMQ keeps its first passwords)"

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


def test_only_producer_scaler_and_workers_reach_rabbitmq_and_only_the_scaler_its_management_api() -> None:
    documents = infra_documents()
    [policy] = [d for d in documents if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "rabbitmq"]
    rabbitmq = next(d for d in documents if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "rabbitmq")
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items()
        <= rabbitmq["spec"]["template"]["metadata"]["labels"].items()
    )
    # Out of a node: only to its peers (epmd, inter-node links) and the API server's port (peer discovery reads
    # the headless Service's endpoints); DNS comes from the namespace-wide `dns` policy.
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"] == [
        {
            "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "rabbitmq"}}}],
            "ports": [{"port": 4369}, {"port": 25672}],
        },
        {"ports": [{"port": 443}, {"port": 6443}]},
    ]
    amqp, management, prometheus, peers = policy["spec"]["ingress"]
    assert peers == {
        "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "rabbitmq"}}}],
        "ports": [{"port": "epmd"}, {"port": "cluster-links"}],
    }
    [expression] = amqp["from"][0]["podSelector"]["matchExpressions"]
    clients = [
        d["spec"]["template"]["metadata"]["labels"]
        for d in documents
        if d["kind"] == "Deployment" and d["metadata"]["name"] in ("producer", "scaler")
    ]
    worker = render_job_manifest(JobType(name="sales", queue="queue_sales"), settings=ClusterSettings())
    clients.append(worker["spec"]["template"]["metadata"]["labels"])
    assert {labels[expression["key"]] for labels in clients} == set(expression["values"])
    assert amqp["ports"] == [{"port": "amqp"}]
    assert management == {
        "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "scaler"}}}],
        "ports": [{"port": "management"}],
    }
    assert prometheus["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    ports = {port["name"] for port in rabbitmq["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {"amqp", "management", "prometheus"} <= ports


def test_the_broker_loads_the_definitions_and_their_users_log_in(broker: Broker) -> None:
    """What k8s-up puts in rabbitmq-definitions, imported into the real RabbitMQ: hashes, tags and permissions
    are what RabbitMQ accepts (the test's own user names, deleted afterwards)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    users = {user: new_password() for user in broker_users(load_config(REPO / "jobs.config.json"), prefix)}
    document = definitions(broker.vhost, users, (f"{prefix}-admin", new_password()))
    del document["vhosts"]  # the test's vhost exists already
    try:
        httpx.post(f"{API}/definitions", json=document, auth=AUTH, timeout=30).raise_for_status()
        for user, password in users.items():
            connection = pika.BlockingConnection(
                pika.URLParameters(with_credentials(broker.amqp_url, user.name, password))
            )
            connection.close()
        scaler = next(user for user in users if user.role is Role.SCALER)
        assert httpx.get(f"{API}/queues", auth=(scaler.name, users[scaler]), timeout=10).status_code == 200
        assert httpx.get(f"{API}/users", auth=(scaler.name, users[scaler]), timeout=10).status_code == 401
    finally:
        delete(broker.api_url, [user.name for user in users] + [f"{prefix}-admin"])


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
