"""The project's one error base, so both HTTP apps map every named error to its status in one place.

A component raises a named subclass (an upload that is not found, a store that
is unreachable, a job type that is unknown) with a message that says what and
where; the app's exception handler answers `{"error": message}` with the
class's `status`. Code never builds error JSON by hand in an endpoint.
"""

from __future__ import annotations


class AutoscalerError(Exception):
    """Base of every error the project reports to a caller. `status` is the HTTP status it maps to.

    `headers` join the response (e.g. Retry-After); `body()` is its JSON.
    """

    status: int = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"error": self.message}


class NotFound(AutoscalerError):
    """What the caller named does not exist (a worker's log, an upload, a job type): 404."""

    status = 404


class BadRequest(AutoscalerError):
    """The request itself is malformed (a parameter, a header, a form): 400."""

    status = 400


class Conflict(AutoscalerError):
    """The request contradicts what is already there (another file under a key, a run in progress): 409."""

    status = 409


class Unavailable(AutoscalerError):
    """A part this request needs (the broker, the store) failed or is out of reach; retrying later may work: 503."""

    status = 503


class UnknownJobType(NotFound):
    """A request names a job type the config does not have."""
