"""Create the stack's Secrets in a cluster from the placeholders of `infra/k8s/secrets.yaml`; never deploy one.

`infra/k8s/secrets.yaml` names every Secret and key the manifests use, with
`PLACEHOLDER-<name>` where a secret value goes (the same name wherever the
same value must appear: the RabbitMQ password in its user and in both URLs).
`./manage.sh k8s-up` runs, in this order:

- `check`: read-only. Exits 2, naming the Secret and key, while a Secret in
  the cluster still holds a placeholder (someone applied the example file).
- `ensure`: creates each missing Secret, and adds keys missing from existing
  ones, with one random value per placeholder name; a value already in the
  cluster (the RabbitMQ password RabbitMQ was first started with) is reused,
  never replaced.
- `strip`: a filter for `kubectl kustomize` output that drops the Secrets,
  so `kubectl apply` never overwrites the real values with placeholders.

Besides the Secrets of that file, `ensure` keeps one Secret per job type of
jobs.config.json (`rabbitmq-worker-<type>`, key `url`: that type's own broker
user, what its worker Jobs get) and `rabbitmq-definitions` (key
`definitions.json`: every broker user, its permissions and a salted hash of its
password, scaler.broker_users), which RabbitMQ loads at boot. The
definitions are rewritten only when the users or their permissions change
(a type added or removed); RabbitMQ reads them at its next start.

python -m scaler.deploy_secrets check|ensure [--namespace NS]
kubectl kustomize infra/k8s | python -m scaler.deploy_secrets strip | kubectl apply -f -
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from common.auth import PLACEHOLDER_PREFIX
from common.config import ConfigError, JobsConfig, load_config
from common.settings import REPO_ROOT, jobs_config_path
from scaler.broker_users import BrokerUser, Role, broker_users, definitions, with_credentials

SECRETS_FILE = REPO_ROOT / "infra" / "k8s" / "secrets.yaml"
PLACEHOLDER = re.compile(rf"{PLACEHOLDER_PREFIX}-[a-z0-9-]+")
DEFAULT_NAMESPACE = "queue-autoscaler"
#: Where the pods reach RabbitMQ (infra/k8s/rabbitmq.yaml's Service) and its one vhost.
BROKER_URL, VHOST = "amqp://rabbitmq:5672/%2F", "/"
ADMIN_SECRET, DEFINITIONS_SECRET, DEFINITIONS_KEY = "rabbitmq-credentials", "rabbitmq-definitions", "definitions.json"
LABELS = {"app.kubernetes.io/part-of": "queue-autoscaler"}


class Refused(Exception):
    """A Secret in the cluster holds a placeholder; the message names it and says what to do."""


@dataclass(frozen=True)
class SecretTemplate:
    name: str
    labels: dict[str, str]
    values: dict[str, str]


def load_templates(path: Path = SECRETS_FILE) -> list[SecretTemplate]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == "Secret"]
    return [
        SecretTemplate(doc["metadata"]["name"], dict(doc["metadata"].get("labels", {})), dict(doc["stringData"]))
        for doc in documents
    ]


def password_placeholder(user: BrokerUser) -> str:
    """The placeholder of a broker user's password: `PLACEHOLDER-<user name>-password` (as secrets.yaml spells it)."""
    return f"{PLACEHOLDER_PREFIX}-{user.name}-password"


def worker_templates(config: JobsConfig) -> list[SecretTemplate]:
    """One Secret per configured type: its workers' broker URL (the Kubernetes backend's default `WORKER_SECRET`)."""
    return [
        SecretTemplate(
            f"rabbitmq-worker-{user.job_type}",
            dict(LABELS),
            {"url": with_credentials(BROKER_URL, user.name, password_placeholder(user))},
        )
        for user in broker_users(config)
        if user.role is Role.WORKER
    ]


def read_secret(api: client.CoreV1Api, name: str, namespace: str) -> dict[str, str] | None:
    """The Secret's values, decoded; None when it does not exist."""
    try:
        secret = api.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}


def _pattern(template: str) -> re.Pattern[str]:
    """A regex that matches `template` with each placeholder captured (a repeated one must repeat)."""
    parts, seen, position = [], set(), 0
    for match in PLACEHOLDER.finditer(template):
        group = match.group().replace("-", "_")
        parts.append(re.escape(template[position : match.start()]))
        parts.append(f"(?P={group})" if group in seen else f"(?P<{group}>.+?)")
        seen.add(group)
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("^" + "".join(parts) + "$")


def known_values(templates: list[SecretTemplate], existing: dict[str, dict[str, str] | None]) -> dict[str, str]:
    """Placeholder name -> the value the cluster already uses for it (from Secrets that exist)."""
    known: dict[str, str] = {}
    for template in templates:
        for key, pattern in template.values.items():
            actual = (existing.get(template.name) or {}).get(key)
            match = _pattern(pattern).match(actual) if actual is not None else None
            for group, value in (match.groupdict() if match else {}).items():
                known.setdefault(group.replace("_", "-"), value)
    return known


def check(templates: list[SecretTemplate], existing: dict[str, dict[str, str] | None], namespace: str) -> None:
    for template in templates:
        for key, value in (existing.get(template.name) or {}).items():
            if PLACEHOLDER_PREFIX in value:
                raise Refused(
                    f"Secret {template.name!r} in namespace {namespace!r} still holds a placeholder in {key!r} "
                    f"(the example values of infra/k8s/secrets.yaml were applied); refusing to deploy. Delete it "
                    f"(kubectl -n {namespace} delete secret {template.name}) and run ./manage.sh k8s-up again to "
                    "generate real values, or put your own values in it"
                )


def fill(template: str, known: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda match: known.setdefault(match.group(), secrets.token_hex(24)), template)


def ensure(
    api: client.CoreV1Api, templates: list[SecretTemplate], namespace: str, config: JobsConfig | None = None
) -> list[str]:
    """Create missing Secrets and keys (and, given the config, the broker users' definitions); returns what was
    done, one line each."""
    existing = {template.name: read_secret(api, template.name, namespace) for template in templates}
    check(templates, existing, namespace)
    known = known_values(templates, existing)
    done = []
    for template in templates:
        current = existing[template.name]
        missing = {key: fill(value, known) for key, value in template.values.items() if key not in (current or {})}
        if not missing:
            continue
        data = {key: base64.b64encode(value.encode()).decode() for key, value in missing.items()}
        if current is None:
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(name=template.name, labels=template.labels), type="Opaque", data=data
            )
            api.create_namespaced_secret(namespace, body)
            done.append(f"created Secret {template.name} ({', '.join(sorted(missing))}) with generated values")
        else:
            api.patch_namespaced_secret(template.name, namespace, {"data": data})
            done.append(f"added {', '.join(sorted(missing))} to Secret {template.name} (generated values)")
    if config is not None:
        done += ensure_definitions(api, namespace, config, known, existing.get(ADMIN_SECRET) or {})
    return done


def _without_hashes(document: dict) -> dict:
    """What a definitions document grants, without the (salted, so always different) password hashes."""
    return {
        **document,
        "users": [{k: v for k, v in user.items() if k != "password_hash"} for user in document["users"]],
    }


def ensure_definitions(
    api: client.CoreV1Api, namespace: str, config: JobsConfig, known: dict[str, str], admin: dict[str, str]
) -> list[str]:
    """Write the broker's definitions when the users or their permissions differ from the config's."""
    users = broker_users(config)
    admin_user = admin.get("username", "autoscaler")
    admin_password = admin.get("password") or known[f"{PLACEHOLDER_PREFIX}-rabbitmq-password"]
    wanted = definitions(
        VHOST, {user: known[password_placeholder(user)] for user in users}, (admin_user, admin_password)
    )
    current = read_secret(api, DEFINITIONS_SECRET, namespace)
    if current is not None and DEFINITIONS_KEY in current:
        try:
            if _without_hashes(json.loads(current[DEFINITIONS_KEY])) == _without_hashes(wanted):
                return []
        except (ValueError, KeyError, TypeError):
            pass  # unreadable: replaced below
    data = {DEFINITIONS_KEY: base64.b64encode(json.dumps(wanted, indent=1).encode()).decode()}
    if current is None:
        metadata = client.V1ObjectMeta(name=DEFINITIONS_SECRET, labels=dict(LABELS))
        api.create_namespaced_secret(namespace, client.V1Secret(metadata=metadata, type="Opaque", data=data))
        return [f"created Secret {DEFINITIONS_SECRET} ({len(users)} broker users)"]
    api.patch_namespaced_secret(DEFINITIONS_SECRET, namespace, {"data": data})
    return [
        f"updated Secret {DEFINITIONS_SECRET} ({len(users)} broker users); RabbitMQ loads it when it starts: "
        f"kubectl -n {namespace} rollout restart statefulset/rabbitmq"
    ]


def strip(source: str) -> str:
    """The YAML stream without its Secrets."""
    documents = [doc for doc in yaml.safe_load_all(source) if doc and doc.get("kind") != "Secret"]
    return yaml.safe_dump_all(documents, sort_keys=False)


def _api() -> client.CoreV1Api:
    config.load_kube_config(context=os.environ.get("K8S_CONTEXT") or None)
    return client.CoreV1Api()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaler.deploy_secrets", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["check", "ensure", "strip"])
    parser.add_argument("--namespace", default=os.environ.get("K8S_NAMESPACE", DEFAULT_NAMESPACE))
    args = parser.parse_args(argv)
    if args.command == "strip":
        sys.stdout.write(strip(sys.stdin.read()))
        return 0
    try:
        config = load_config(jobs_config_path())
    except ConfigError as error:
        print(f"[secrets] error: {error}", file=sys.stderr)
        return 2
    templates = load_templates() + worker_templates(config)
    try:
        api = _api()
        if args.command == "check":
            existing = {t.name: read_secret(api, t.name, args.namespace) for t in templates}
            check(templates, existing, args.namespace)
        else:
            for line in ensure(api, templates, args.namespace, config):
                print(f"[secrets] {line}", file=sys.stderr)
    except Refused as refused:
        print(f"[secrets] error: {refused}", file=sys.stderr)
        return 2
    except (ApiException, ConfigException) as error:
        reason = getattr(error, "reason", None) or error
        print(f"[secrets] error: cannot read or write Secrets in {args.namespace!r}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
