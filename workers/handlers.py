"""Find a job type's handler by convention: `workers/<handler>/handler.py` with a `handle(row, context)`.

A dotted `handler` setting (`mycompany.jobs.resize`) names any importable
module instead, for handlers that live in their own package.

A job type is added with a folder and a config entry, no runtime code, so the
runtime imports the handler by name and refuses, with a message that says what
is wrong, anything it cannot call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from jobtypes.config import JobType

Handler = Callable[[dict[str, Any], Any], None]


class HandlerNotFound(Exception):
    """The type's handler module is missing, fails to import, or has no callable `handle`."""


def load_handler(job_type: JobType) -> Handler:
    module_name = job_type.handler if "." in job_type.handler else f"workers.{job_type.handler}.handler"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise HandlerNotFound(
                f"job type {job_type.name!r}: no handler module {module_name} "
                f"(create workers/{job_type.handler}/handler.py with a handle(row, context) function)"
            ) from error
        raise HandlerNotFound(f"job type {job_type.name!r}: {module_name} cannot be imported: {error}") from error
    except Exception as error:  # noqa: BLE001 - any import-time failure of user code is reported, not raised
        raise HandlerNotFound(f"job type {job_type.name!r}: {module_name} failed to import: {error!r}") from error
    handle = getattr(module, "handle", None)
    if not callable(handle):
        raise HandlerNotFound(f"job type {job_type.name!r}: {module_name} has no callable handle(row, context)")
    return handle
