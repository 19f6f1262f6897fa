"""Fault tests only: a point where a process announces itself and waits, so a test can kill it
provably mid-operation (settings.INFERENCE_TEST_BARRIER, UPLOAD_TEST_BARRIER; empty in
production, where this returns at once)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def fault_barrier(barrier: str, detail: str = "", *, timeout: float = 60) -> None:
    """Write '<pid> <detail>' to '<barrier>.reached' and wait until the file '<barrier>' exists."""
    if not barrier:
        return
    Path(f"{barrier}.reached").write_text(f"{os.getpid()} {detail}\n")
    deadline = time.monotonic() + timeout
    while not Path(barrier).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
