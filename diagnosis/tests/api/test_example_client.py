"""The example client in docs/api.md, extracted from the markdown and run as a separate process
against a live server whose predictions run in-process on a tiny random-weight model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from diagnosis.models import Case, WebhookDelivery
from diagnosis.services.tokens import api_client_create, api_token_create

DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"


def example_client_code() -> str:
    text = DOC.read_text()
    match = re.search(
        r"<!-- example-client:start -->\s*```python\n(.*?)```\s*<!-- example-client:end -->",
        text,
        re.DOTALL,
    )
    assert match, "docs/api.md has no example client block"
    return match.group(1)


@pytest.mark.slow
def test_example_client_runs_against_a_live_server(
    live_server, transactional_db, eager_tasks, tiny_model, sample_paths, tmp_path, clinician
):
    from diagnosis.services.models import model_version_register

    model_version_register(artifact_dir=tiny_model, activate=True)
    client = api_client_create(user=clinician, name="example")
    _, raw = api_token_create(
        client=client, user=clinician, scopes=["read", "write"], expires_at=None
    )
    script = tmp_path / "example_client.py"
    script.write_text(example_client_code())
    env = {
        **os.environ,
        "FRACTURE_PORTAL_URL": live_server.url,
        "FRACTURE_PORTAL_TOKEN": raw,
        "FRACTURE_PORTAL_OUT": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, str(script), str(sample_paths[0]), str(sample_paths[1])],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    case = Case.objects.get()
    assert case.status == "predicted"
    assert case.source == "api"
    out = result.stdout
    assert f"case {case.uuid} accepted" in out
    assert "status: predicted" in out
    assert len(re.findall(r"image \d: (not_)?fractured \(probability 0\.\d+", out)) == 2
    heatmaps = sorted(tmp_path.glob("heatmap-*.png"))
    assert len(heatmaps) == 2
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in heatmaps)
    assert not WebhookDelivery.objects.exists()  # this client has no webhook URL
