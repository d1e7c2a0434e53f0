"""One exception for every way an upload can be refused, carrying its HTTP status (and headers, e.g. Retry-After)."""

from __future__ import annotations

from typing import Any

from jobtypes.errors import AutoscalerError


class UploadError(AutoscalerError):
    """Refuse the upload with `status` and a message a person can act on; `extra` joins the JSON body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}
