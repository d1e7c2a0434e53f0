"""Calling the Kubernetes API safely: retries, readable errors, paginated lists, the client's configuration.

Every call the backend makes goes through `with_retries`: 409/429/5xx answers,
transport errors and timeouts are retried with exponential backoff; what still
fails is raised as one `KubernetesApiError` line naming the call ("creating
Job x: 403 Forbidden: ..."), which the control loop logs and shows. Lists are
read in pages (`limit` + `continue`), so a namespace full of Jobs never comes
back as one huge answer; an expired continue token (410 Gone) restarts the
list. `NotLeading` is what a write refused by leader election raises.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import config
from kubernetes.client.exceptions import ApiException
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from common.env import env_str

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIED_STATUSES = {409, 429, 500, 502, 503, 504}
#: A list restarts this many times at most when its continue token expires mid-way (410 Gone).
LIST_RESTARTS = 2


class KubernetesApiError(RuntimeError):
    """An API call that still failed after its retries, in one readable line (for the log and the dashboard)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotLeading(KubernetesApiError):
    """A create or delete refused before it was sent: this replica does not (or no longer safely) lead."""


def _retriable(error: BaseException) -> bool:
    if isinstance(error, ApiException):
        return error.status in RETRIED_STATUSES
    return isinstance(error, (urllib3.exceptions.HTTPError, OSError))


def describe(error: BaseException | None) -> str:
    """An API error in one line ("429 Too Many Requests: ..."), not the client's multi-line dump with headers."""
    if isinstance(error, ApiException):
        message = ""
        try:
            message = json.loads(error.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            message = str(error.body or "")[:200]
        return f"{error.status} {error.reason}" + (f": {message}" if message else "")
    return f"{type(error).__name__}: {error}"


def with_retries(call: Callable[[], T], what: str, attempts: int = 4) -> T:
    """Run `call`, retrying API errors that may pass (conflict, throttling, server errors, timeouts).

    What still fails is raised as a KubernetesApiError naming the call, e.g.
    "creating Job x: 403 Forbidden: jobs.batch is forbidden: ..."."""
    try:
        for attempt in Retrying(
            retry=retry_if_exception(_retriable),
            wait=wait_exponential(multiplier=0.2, max=2),
            stop=stop_after_attempt(attempts),
            reraise=True,
            before_sleep=lambda state: log.warning(
                "%s failed (%s), retrying", what, describe(state.outcome.exception())
            ),
        ):
            with attempt:
                return call()
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
        raise KubernetesApiError(f"{what}: {describe(error)}", getattr(error, "status", None)) from error
    raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or reraises


def list_all(list_page: Callable[..., Any], what: str, page_size: int) -> list[Any]:
    """Every item of a paginated list: `list_page(limit=, _continue=)` page after page, each retried.

    A continue token that expired between pages (410 Gone, e.g. after etcd compaction) restarts the list."""
    for _ in range(LIST_RESTARTS + 1):
        items: list[Any] = []
        token: str | None = None
        try:
            while True:
                page = with_retries(lambda token=token: list_page(limit=page_size, _continue=token), f"listing {what}")
                items.extend(page.items)
                token = page.metadata._continue if page.metadata is not None else None
                if not token:
                    return items
        except KubernetesApiError as error:
            if error.status != 410 or token is None:
                raise
            log.info("listing %s: the continue token expired; listing again from the start", what)
    raise KubernetesApiError(f"listing {what}: the list kept changing (410 Gone {LIST_RESTARTS + 1} times)", 410)


def load_client_configuration() -> None:
    """In a Pod, its service account; elsewhere the kubeconfig: $KUBECONFIG (read now, so a value set after
    import counts) or ~/.kube/config, with its current context or $SCALER_KUBE_CONTEXT."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=env_str("KUBECONFIG", None), context=env_str("SCALER_KUBE_CONTEXT", None))
