"""A handler that does nothing: measures the runtime's own cost per message (bench/worker.py)."""

from typing import Any


def handle(row: dict[str, Any], context: Any) -> None:
    return None
