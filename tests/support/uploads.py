"""Read upload records over the producer's HTTP API in tests, and wait on them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.support.stack import Stack
from tests.support.waiting import wait_until


def record(stack: Stack, upload_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.producer_url}/uploads/{upload_id}", timeout=10)
    response.raise_for_status()
    return response.json()


def wait_record(
    stack: Stack, upload_id: str, predicate: Callable[[dict[str, Any]], Any], what: str, timeout: float = 30
) -> dict[str, Any]:
    """The first record for which `predicate` holds; on timeout, fail with the last record and the producer's log."""
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        last.update(record(stack, upload_id))
        return dict(last) if predicate(last) else None

    try:
        return wait_until(check, timeout=timeout, interval=0.1, what=what)
    except AssertionError as error:
        log = stack.producer.log()[-3000:] if stack.producer else ""
        raise AssertionError(f"{error}\nrecord: {last}\nproducer log:\n{log}") from None
