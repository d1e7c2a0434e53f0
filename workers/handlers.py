"""Find a job type's handler by convention: `workers/<handler>/handler.py` with `handle` or `handle_batch`.

A dotted `handler` setting (`mycompany.jobs.resize`) names any importable
module instead, for handlers that live in their own package.

A handler module defines one of:

* `handle(row, context)`: called once per row (`context` is a `Context`).
* `handle_batch(rows, context)`: called with up to the type's `batch_size`
  rows (`context` is a `BatchContext`, `context.rows[i]` describes `rows[i]`).
  Its rows are acked together after it returns. If it raises, the batch is
  split in halves and each half handed to it again, down to single rows, so
  only the bad rows are retried: a batch handler must therefore leave no
  partial effect when it raises (one transaction per call).

A job type is added with a folder and a config entry, no runtime code, so the
runtime imports the handler by name and refuses, with a message that says what
is wrong, anything it cannot call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.config import JobType

RowHandler = Callable[[dict[str, Any], Any], None]
BatchHandler = Callable[[list[dict[str, Any]], Any], None]


class HandlerNotFound(Exception):
    """The type's handler module is missing, fails to import, or has no usable handler function."""


@dataclass(frozen=True)
class Handler:
    """Exactly one of the two is set."""

    handle: RowHandler | None = None
    handle_batch: BatchHandler | None = None


def load_handler(job_type: JobType) -> Handler:
    module_name = job_type.handler if "." in job_type.handler else f"workers.{job_type.handler}.handler"
    module = _import(job_type, module_name)
    handle_batch = getattr(module, "handle_batch", None)
    if callable(handle_batch):
        return Handler(handle_batch=handle_batch)
    handle = getattr(module, "handle", None)
    if not callable(handle):
        raise HandlerNotFound(
            f"job type {job_type.name!r}: {module_name} has no callable handle(row, context) "
            "or handle_batch(rows, context)"
        )
    if job_type.batch_size > 1:
        raise HandlerNotFound(
            f"job type {job_type.name!r}: batch_size is {job_type.batch_size} but {module_name} has no "
            "handle_batch(rows, context); define one or leave batch_size at 1"
        )
    return Handler(handle=handle)


def _import(job_type: JobType, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise HandlerNotFound(
                f"job type {job_type.name!r}: no handler module {module_name} "
                f"(create workers/{job_type.handler}/handler.py with a handle(row, context) function)"
            ) from error
        raise HandlerNotFound(f"job type {job_type.name!r}: {module_name} cannot be imported: {error}") from error
    except Exception as error:  # noqa: BLE001 - any import-time failure of user code is reported, not raised
        raise HandlerNotFound(f"job type {job_type.name!r}: {module_name} failed to import: {error!r}") from error
