"""Upload file names: sanitised for display only. Storage always uses generated names."""

from __future__ import annotations

import unicodedata
import uuid

from diagnosis.exceptions import InvalidUploadError

MAX_DISPLAY_NAME = 120
_MAX_EXTENSION = 10


def sanitize_display_name(filename: str | None) -> str:
    """A harmless display form of a client-supplied file name.

    Keeps only the last path component, drops control, format (bidi overrides, zero-width) and
    unassigned characters, strips leading dots and caps the length while keeping the extension.
    The result is for display only; it is never used to build a storage path.
    """
    name = unicodedata.normalize("NFKC", filename or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    name = name.strip().lstrip(".").strip()
    if len(name) > MAX_DISPLAY_NAME:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and 0 < len(ext) <= _MAX_EXTENSION:
            name = f"{stem[: MAX_DISPLAY_NAME - len(ext) - 1]}.{ext}"
        else:
            name = name[:MAX_DISPLAY_NAME]
    return name or "image"


def generated_name(extension: str) -> str:
    """A fresh, unguessable storage name such as `3f2a...c1.png`."""
    return f"{uuid.uuid4().hex}.{extension}"


def multipart_error(exc: Exception) -> InvalidUploadError:
    """The true reason a multipart upload could not be parsed. Django refuses a part whose headers
    pass 1024 bytes (MultiPartParser.MAX_TOTAL_HEADER_SIZE), which in practice is a file name of
    roughly 900 or more characters; anything else is a request cut off or malformed."""
    if "header size" in str(exc).lower():
        return InvalidUploadError(
            "A file name is too long to upload (keep it under about 900 characters): rename "
            "the file and try again.",
            code="file_name_too_long",
        )
    return InvalidUploadError(
        "The upload could not be read: the request was cut off or malformed. Try again.",
        code="malformed_request",
    )
