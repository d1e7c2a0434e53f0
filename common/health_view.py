"""What a health endpoint tells whom: every caller learns which part is healthy, only the authenticated learn why.

Health probes are public (a kubelet or a load balancer has no token), and
their details (error texts with database users, hosts, broker addresses)
help an attacker more than an operator who is not logged in. So both apps
answer a public caller with the overall status and one `ok` / `failing` word
per part, and an authenticated caller (`scope["auth"]` set by
`common.auth.AuthMiddleware`) with the full document. Framework-free, like
`common.auth`: worker images carry `common` without a web framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OK, FAILING = "ok", "failing"


def visible_health(scope: Mapping[str, Any], document: dict[str, Any], parts: Mapping[str, bool]) -> dict[str, Any]:
    """The full `document` for an authenticated caller (the request's ASGI `scope`), else its `status` and
    each part as ok/failing."""
    if scope.get("auth") is not None:
        return document
    return {"status": document["status"], **{name: OK if healthy else FAILING for name, healthy in parts.items()}}
