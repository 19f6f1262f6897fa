"""Query-parameter parsing shared by the pages: lenient, never an exception."""

from __future__ import annotations

import re

# ASCII digits only: str.isdigit() also accepts "²" (which int() refuses) and int() accepts
# "٣" (Arabic-Indic); 18 digits stay inside a 64-bit primary key.
_ID = re.compile(r"[0-9]{1,18}")


def query_id(value: object) -> int | None:
    """A positive database id given in a query string, or None for anything else."""
    if isinstance(value, str) and _ID.fullmatch(value):
        number = int(value)
        return number if number > 0 else None
    return None
