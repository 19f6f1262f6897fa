"""Upload file names: sanitised for display only. Storage always uses generated names."""

from __future__ import annotations

import unicodedata
import uuid

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
