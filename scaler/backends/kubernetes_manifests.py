"""The batch/v1 Job that runs one worker: a pure function of the job type (and the cluster settings).

Used by the Kubernetes backend to create workers and by
`python -m scaler render-job <type>` to show an operator exactly what would be
created, without a cluster. Names and label values are limited to 63
characters by Kubernetes; long job-type names are shortened with a hash so
they stay unique, and the full name is kept in an annotation.

Every worker pod meets the "restricted" Pod Security Standard (non-root,
no privilege escalation, every capability dropped, RuntimeDefault seccomp) and
runs on a read-only root filesystem with one writable emptyDir at /tmp. Its
only credential is its type's broker user (scaler.broker_users), from the
Secret `WORKER_SECRET` names, `{type}` standing for the job type's name.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from common.config import JobType
from common.env import env_str
from common.handoff import JOB_TYPE_ENV, encode

PART_OF = "queue-autoscaler"
TYPE_LABEL = "queue-autoscaler.io/job-type"
TYPE_ANNOTATION = "queue-autoscaler.io/job-type"
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={PART_OF},app.kubernetes.io/component=worker"
CONFIG_MOUNT = "/etc/queue-autoscaler"
#: The one writable place in a worker's filesystem, and its size limit.
TMP_MOUNT, TMP_SIZE = "/tmp", "256Mi"
#: The uid and gid the images' USER runs as (their Dockerfiles create it).
IMAGE_UID = 10001
#: Stands for the job type's name in `ClusterSettings.secret`.
TYPE_PLACEHOLDER = "{type}"
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class ClusterSettings:
    """Where workers run and where their secrets and config come from (env, with infra/k8s's names)."""

    namespace: str = "queue-autoscaler"
    #: The Secret holding a worker's broker URL: one per type by default (each type its own broker user);
    #: without `{type}`, every type's workers share one.
    secret: str = f"rabbitmq-worker-{TYPE_PLACEHOLDER}"
    secret_key: str = "url"
    config_map: str = "jobs-config"
    service_account: str | None = None
    pull_policy: str = "IfNotPresent"

    @classmethod
    def from_environment(cls) -> ClusterSettings:
        namespace = env_str("SCALER_NAMESPACE", None)
        if not namespace:
            try:
                with open(SERVICE_ACCOUNT_NAMESPACE_FILE) as handle:
                    namespace = handle.read().strip()
            except OSError:
                namespace = cls.namespace
        return cls(
            namespace=namespace,
            secret=env_str("WORKER_SECRET", cls.secret),
            secret_key=env_str("WORKER_SECRET_KEY", cls.secret_key),
            config_map=env_str("JOBS_CONFIGMAP", cls.config_map),
            service_account=env_str("WORKER_SERVICE_ACCOUNT", None),
            pull_policy=env_str("WORKER_IMAGE_PULL_POLICY", cls.pull_policy),
        )


def short_name(name: str, limit: int) -> str:
    """`name` if it fits in `limit`, else a prefix and an 8-character hash (still a valid DNS label)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def new_worker_id(job_type: JobType) -> str:
    """A unique Job name for a new worker of `job_type`, at most 63 characters: the (shortened) type name,
    a time part (sorts roughly by start) and 24 random bits."""
    suffix = f"{int(time.time()) % 100000:05d}{secrets.token_hex(3)}"
    return f"{short_name(job_type.name, 63 - len(suffix) - 1)}-{suffix}"


def worker_secret(job_type: JobType, settings: ClusterSettings) -> str:
    """The name of the Secret with the broker URL of `job_type`'s workers."""
    return settings.secret.replace(TYPE_PLACEHOLDER, job_type.name)


def worker_labels(job_type: JobType, worker_id: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "queue-autoscaler-worker",
        "app.kubernetes.io/instance": worker_id,
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": PART_OF,
        TYPE_LABEL: short_name(job_type.name, 63),
    }


def worker_env(job_type: JobType, settings: ClusterSettings) -> list[dict[str, Any]]:
    """The worker container's environment: the type's `env`, then what the scaler hands every worker (its id,
    its type's broker URL from its Secret, the config's path, and the type's validated settings, which the worker
    prefers to a possibly broken file), which win over a same-named entry of the type's `env`."""
    scaler_env: list[dict[str, Any]] = [
        {
            "name": "WORKER_ID",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/instance']"}},
        },
        {
            "name": "RABBITMQ_URL",
            "valueFrom": {"secretKeyRef": {"name": worker_secret(job_type, settings), "key": settings.secret_key}},
        },
        {"name": "JOBS_CONFIG", "value": f"{CONFIG_MOUNT}/jobs.config.json"},
    ]
    scaler_env.append({"name": JOB_TYPE_ENV, "value": encode(job_type)})
    taken = {entry["name"] for entry in scaler_env}
    return [{"name": k, "value": v} for k, v in job_type.env.items() if k not in taken] + scaler_env


def render_job_manifest(
    job_type: JobType,
    worker_id: str | None = None,
    settings: ClusterSettings | None = None,
) -> dict[str, Any]:
    """The Job of one worker of `job_type`."""
    settings = settings or ClusterSettings.from_environment()
    worker_id = worker_id or new_worker_id(job_type)
    labels = worker_labels(job_type, worker_id)
    env = worker_env(job_type, settings)
    container: dict[str, Any] = {
        "name": "worker",
        "image": job_type.image,
        "imagePullPolicy": settings.pull_policy,
        "env": env,
        "volumeMounts": [
            {"name": "jobs-config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": TMP_MOUNT},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if job_type.command:
        container["command"] = list(job_type.command)
    else:
        container["args"] = [job_type.name]  # the image's entrypoint is `python -m workers`
    resources = {
        kind: {key: str(value) for key, value in values.items()}
        for kind, values in (("requests", job_type.resources.requests), ("limits", job_type.resources.limits))
        if values
    }
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Workers never call the API server, and must not get PRODUCER_PORT=tcp://... from service links.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": int(job_type.stop_grace_seconds),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "fsGroup": IMAGE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "jobs-config", "configMap": {"name": settings.config_map}},
            {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
        ],
    }
    if job_type.node_selector:
        pod_spec["nodeSelector"] = dict(job_type.node_selector)
    if job_type.tolerations:
        pod_spec["tolerations"] = [dict(toleration) for toleration in job_type.tolerations]
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": worker_id,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": {TYPE_ANNOTATION: job_type.name},
        },
        "spec": {
            "backoffLimit": job_type.backoff_limit,
            "ttlSecondsAfterFinished": job_type.ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": {TYPE_ANNOTATION: job_type.name}},
                "spec": pod_spec,
            },
        },
    }
