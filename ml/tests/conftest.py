"""Fixtures for the ml library tests (no Django needed: run with `-p no:django`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"


@pytest.fixture(autouse=True)
def _media_root() -> None:
    """Overrides the project-wide Django fixture: the ml library has no media."""


@pytest.fixture(autouse=True, scope="session")
def _flush_past_audit_guard() -> None:
    """Overrides the project-wide database fixture: the ml library uses no database."""


@pytest.fixture
def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*.jpg"))


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def make_folder_dataset(root: Path, *, per_class: int = 6, size: int = 48, seed: int = 0) -> Path:
    """A tiny split/label/*.png dataset: fractured images carry a bright bar, others do not."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        for label in ("fractured", "not_fractured"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = rng.integers(20, 90, (size, size + 8), dtype=np.uint8)
                if label == "fractured":
                    r, c = rng.integers(4, size - 12, 2)
                    img[r : r + 8, c : c + 3] = 250
                (folder / f"{label}_{i}.png").write_bytes(png_bytes(img))
    return root
