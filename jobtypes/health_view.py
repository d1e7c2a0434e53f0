"""What a health endpoint tells whom: every caller learns which part is healthy, only the authenticated learn why.

Health probes are public (a kubelet or a load balancer has no token), and
their details (error texts with database users, hosts, broker addresses)
help an attacker more than an operator who is not logged in. So both apps
answer a public caller with the overall status and one `ok` / `failing` word
per part, and an authenticated caller (`scope["auth"]` set by
`jobtypes.auth.AuthMiddleware`) with the full document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

OK, FAILING = "ok", "failing"


def health_response(
    request: Request, document: dict[str, Any], parts: Mapping[str, bool], status_code: int = 200
) -> JSONResponse:
    """The full `document` for an authenticated caller, else its `status` and each part as ok/failing."""
    if request.scope.get("auth") is not None:
        return JSONResponse(document, status_code=status_code)
    public = {"status": document["status"], **{name: OK if healthy else FAILING for name, healthy in parts.items()}}
    return JSONResponse(public, status_code=status_code)
