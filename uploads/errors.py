"""Every upload error, one hierarchy under `UploadError`: the store's here, the producer's refusals in
`producer.errors`. Each carries its HTTP status (through the generic bases of `common.errors`), so an app maps
them all to a response once (`common.error_responses`)."""

from __future__ import annotations

from typing import Any

from common.errors import AutoscalerError, Conflict, NotFound, Unavailable


class UploadError(AutoscalerError):
    """Base of the upload errors; `extra` joins the JSON body (which upload, how far it got), for the answers a
    client may act on by itself."""

    def __init__(self, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message, headers)
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


class UploadNotFound(UploadError, NotFound):
    """No record of that upload id."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(f"no upload {upload_id[:80]!r} (unknown, or removed after the retention period)")


class StoreUnavailable(UploadError, Unavailable):
    """The database behind the store cannot be reached or refused the operation."""


class IdempotencyConflict(UploadError, Conflict):
    """An Idempotency-Key already names an upload of a different file (or job type)."""


class UploadBusy(UploadError, Conflict):
    """The upload is being published by another request right now."""


class UploadCancelled(UploadError, Conflict):
    """A retry of an upload that was cancelled meanwhile: nothing more of it is published."""


class LeaseLost(UploadError, Unavailable):
    """This publishing run no longer holds the upload's lease (it expired and was released or taken over)."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(
            f"upload {upload_id[:80]}: this producer lost its publishing lease (it could not renew it in time), "
            "so it stopped publishing; retry with the same Idempotency-Key"
        )
