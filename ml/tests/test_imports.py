"""`ml` stays light: importing it (and reading a card) pulls in neither Django nor TensorFlow."""

from __future__ import annotations

import subprocess
import sys

from ml.tests.conftest import REPO


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip()


def test_light_imports_leave_out_django_and_tensorflow(tmp_path):
    code = f"""
import json, pathlib, sys
import ml, ml.config, ml.preprocess, ml.registry, ml.inference, ml.gradcam
d = pathlib.Path({str(tmp_path)!r})
(d / "card.json").write_text(json.dumps({{"version": "v", "architecture": "plain"}}))
card = ml.registry.read_card(d)
img = ml.preprocess.decode_image(pathlib.Path("samples/fracatlas_IMG0000339.jpg").read_bytes())
ml.preprocess.preprocess(img, card.spec)
heavy = sorted(m for m in ("django", "tensorflow", "keras", "celery", "torch") if m in sys.modules)
print(",".join(heavy) or "none")
"""
    assert _run(code) == "none"
