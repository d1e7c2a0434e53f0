"""Every way the producer refuses an upload, each a named `UploadError` (uploads.errors) that says what went
wrong and carries its HTTP status.

Code raises the class that names the problem (`UploadTooLarge`, `InvalidCsv`,
...) with a message a person can act on; `producer.app` maps them all to a
response once (`common.error_responses`). `extra` fields join the JSON body,
for the refusals a client may act on by itself (which upload, how far it got).
"""

from __future__ import annotations

from common.errors import BadRequest, Unavailable
from uploads.errors import UploadError


class MalformedUpload(UploadError, BadRequest):
    """The request around the file is wrong: a header, a parameter, the multipart form, a job type's spelling."""


class UploadCutOff(UploadError):
    """The body stopped arriving, or came too slowly, before it was whole: nothing was queued."""

    status = 408


class UploadTooLarge(UploadError):
    """The upload (or what its rows would take) is over a size limit: nothing was queued."""

    status = 413


class NotCsvText(UploadError):
    """The file is not UTF-8 CSV text (another encoding, a binary format, a content type not accepted)."""

    status = 415


class InvalidCsv(UploadError):
    """The file is UTF-8 text but not CSV this job type can take (a bad line, a missing column, a limit per row)."""

    status = 422


class PublishFailed(UploadError, Unavailable):
    """The broker failed while the rows were published: some were confirmed, the rest wait for a retry."""
