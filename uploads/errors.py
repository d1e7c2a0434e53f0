"""The upload store's named errors, each carrying the HTTP status an app answers with."""

from __future__ import annotations

from common.errors import AutoscalerError, NotFound


class UploadNotFound(NotFound):
    """No record of that upload id."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(f"no upload {upload_id[:80]!r} (unknown, or removed after the retention period)")


class StoreUnavailable(AutoscalerError):
    """The database behind the store cannot be reached or refused the operation."""

    status = 503


class IdempotencyConflict(AutoscalerError):
    """An Idempotency-Key already names an upload of a different file (or job type)."""

    status = 409


class UploadBusy(AutoscalerError):
    """The upload is being published by another request right now."""

    status = 409


class UploadCancelled(AutoscalerError):
    """A retry of an upload that was cancelled meanwhile: nothing more of it is published."""

    status = 409


class LeaseLost(AutoscalerError):
    """This publishing run no longer holds the upload's lease (it expired and was released or taken over)."""

    status = 503

    def __init__(self, upload_id: str) -> None:
        super().__init__(
            f"upload {upload_id[:80]}: this producer lost its publishing lease (it could not renew it in time), "
            "so it stopped publishing; retry with the same Idempotency-Key"
        )
