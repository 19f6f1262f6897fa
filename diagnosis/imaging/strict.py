"""Decoder warnings as errors, without touching other threads' warnings.

Python 3.11's `warnings.catch_warnings` swaps the process-wide filter list, so two threads inside
it at once can leave each other's filters behind. Our blocks therefore run one at a time (a lock,
uncontended under gunicorn's one-thread sync workers), and the "error" filter names only the
decoder packages and this one, so a warning raised elsewhere in the meantime keeps its usual
behaviour. Pillow's DecompressionBombWarning is an error wherever it is attributed.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

_LOCK = threading.RLock()


def _pattern(modules: tuple[str, ...]) -> str:
    names = "|".join(re.escape(name) for name in (*modules, "diagnosis.imaging"))
    return rf"^({names})(\.|$)"


@contextmanager
def warnings_as_errors(*modules: str, allowed: tuple[str, ...] = ()) -> Iterator[None]:
    """Inside the block, warnings issued by `modules` (e.g. "PIL") or diagnosis.imaging raise,
    except those whose message matches one of the `allowed` regular expressions (ignored)."""
    with _LOCK, warnings.catch_warnings():
        warnings.filterwarnings("error", module=_pattern(modules))
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
        for message in allowed:  # added last, so matched first
            warnings.filterwarnings("ignore", message=message)
        yield


@contextmanager
def warnings_ignored(*modules: str) -> Iterator[None]:
    """Inside the block, warnings issued by `modules` are dropped (lenient DICOM reading)."""
    with _LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=_pattern(modules))
        yield
