"""The upload records' PostgreSQL manifest: it refuses a placeholder password, and only the producer and workers reach it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.test_k8s_manifests import infra_documents


def named(kind: str, name: str) -> dict:
    return next(d for d in infra_documents() if d["kind"] == kind and d["metadata"]["name"] == name)


def test_postgres_refuses_to_start_with_a_placeholder_or_no_password(tmp_path: Path) -> None:
    """The container's command, run here with sh: a placeholder or an empty password stops it."""
    container = named("StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    (tmp_path / "docker-entrypoint.sh").write_text('#!/bin/sh\necho entrypoint "$@"\n')
    (tmp_path / "docker-entrypoint.sh").chmod(0o755)
    for password in ("PLACEHOLDER-postgres-password", ""):
        env = {"POSTGRES_PASSWORD": password, "PATH": str(tmp_path)}
        refused = subprocess.run(container["command"], env=env, capture_output=True, text=True, timeout=10)
        assert refused.returncode == 1 and "placeholder" in refused.stderr
    env = {"POSTGRES_PASSWORD": "p" * 40, "PATH": str(tmp_path)}
    started = subprocess.run(container["command"], env=env, capture_output=True, text=True, timeout=10)
    assert started.returncode == 0 and started.stdout == "entrypoint postgres\n"
    secret = container["env"][2]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "postgres-credentials", "key": "POSTGRES_PASSWORD"}


def test_only_the_producer_reaches_postgres() -> None:
    """Workers reach only RabbitMQ (docs/kubernetes.md shows the policy to add for a handler that uses Postgres)."""
    policy = named("NetworkPolicy", "postgres")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "postgres"}
    assert policy["spec"]["egress"] == []
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "producer"}}}]
    assert named("Service", "postgres")["spec"]["type"] == "ClusterIP"
    producer = named("Deployment", "producer")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in producer["env"]}
    assert env["UPLOADS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "uploads-database-url"
