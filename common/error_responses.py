"""The one place a named error becomes an HTTP response, for both apps (producer and scaler).

Each app registers `EXCEPTION_HANDLERS` with Starlette, so an endpoint only
raises an `AutoscalerError` subclass and never builds error JSON itself; the
status, the `{"error": ...}` body and the headers (a 503 always tells the
client when to try again) come out the same from either app.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from common.errors import AutoscalerError

#: Retry-After sent with a 503 that does not name its own.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5


async def error_response(request: Request, error: Exception) -> Response:
    """Every named error, raised anywhere under an endpoint, as `{"error": ...}` with its status."""
    assert isinstance(error, AutoscalerError)
    headers = dict(error.headers)
    if error.status == 503:
        headers.setdefault("Retry-After", str(UNAVAILABLE_RETRY_AFTER_SECONDS))
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


#: Starlette's `exception_handlers=` for either app.
EXCEPTION_HANDLERS = {AutoscalerError: error_response}
