"""The project's one error base, so both HTTP apps map every named error to its status in one place.

A component raises a named subclass (an upload that is not found, a store that
is unreachable, a job type that is unknown) with a message that says what and
where; the app's exception handler answers `{"error": message}` with the
class's `status`. Code never builds error JSON by hand in an endpoint.
"""

from __future__ import annotations


class AutoscalerError(Exception):
    """Base of every error the project reports to a caller. `status` is the HTTP status it maps to."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": self.message}
