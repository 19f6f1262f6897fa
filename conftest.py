"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path: Path) -> None:
    """Every test writes media under its own tmp dir."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def sample_paths() -> list[Path]:
    return sorted(SAMPLES_DIR.glob("*.jpg"))


@pytest.fixture
def sample_jpeg_bytes(sample_paths: list[Path]) -> bytes:
    return sample_paths[0].read_bytes()
