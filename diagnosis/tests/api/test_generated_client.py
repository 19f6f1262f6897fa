"""Clients generated from the live schema do the whole API flow, through generated calls only: a
Python client made with openapi-python-client, one made with openapi-generator, and a TypeScript
client typed by openapi-typescript and run with openapi-fetch. The configuration and the commands
are those of docs/api.md ("Generate a client"); the server runs predictions in-process on a tiny
random-weight model."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from diagnosis.api.throttling import TokenScopeRateThrottle
from diagnosis.models import Case

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "api.md"
TYPESCRIPT = ROOT / "tests" / "clients" / "typescript"  # package.json, lock, client.ts, run.mjs
PACKAGE = "fracture_portal_client"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def docs_block(name: str, language: str) -> str:
    match = re.search(
        rf"<!-- {name}:start -->\s*```{language}\n(.*?)```\s*<!-- {name}:end -->",
        DOC.read_text(),
        re.DOTALL,
    )
    assert match, f"docs/api.md has no {name} block"
    return match.group(1)


def _run_block(block: str, *, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs a docs/api.md command block in tmp_path, with the venv's tools first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", docs_block(block, "sh")],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _generate(block: str, package: str, *, url: str, token: str, tmp_path: Path):
    """Runs a docs/api.md command block against the live server; the installed package."""
    result = _run_block(
        block,
        tmp_path=tmp_path,
        env={"FRACTURE_PORTAL_URL": url, "FRACTURE_PORTAL_TOKEN": token},
    )
    site = tmp_path / "client-site"
    assert not package or (site / package / "__init__.py").exists()
    return result.stdout + result.stderr, site


@contextlib.contextmanager
def _imported(site: Path, package: str):
    sys.path.insert(0, str(site))
    try:
        yield __import__(package)
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
            del sys.modules[name]


@pytest.fixture
def generated_client(live_server, transactional_db, tmp_path, issue_token, admin_user):
    """openapi-python-client's client, made by docs/api.md's commands against the live server."""
    raw, _ = issue_token(admin_user, ["read"])  # any token may read the schema
    (tmp_path / "openapi-python-client.yaml").write_text(
        docs_block("generate-client-config", "yaml")
    )
    output, site = _generate(
        "generate-client", PACKAGE, url=live_server.url, token=raw, tmp_path=tmp_path
    )
    assert "Warning" not in output  # nothing of the schema was skipped
    with _imported(site, PACKAGE) as package:
        yield package


def _file(path: Path, content: bytes | None = None):
    from fracture_portal_client.types import File

    return File(payload=io.BytesIO(content or path.read_bytes()), file_name=path.name)


@pytest.mark.slow
def test_generated_python_client_does_the_whole_flow(
    generated_client,
    live_server,
    transactional_db,
    eager_tasks,
    tiny_model,
    sample_paths,
    settings,
    monkeypatch,
    issue_token,
    clinician,
    radiologist,
    radiologist_b,
):
    from fracture_portal_client import AuthenticatedClient, Client
    from fracture_portal_client.api.cases import (
        cases_cancel,
        cases_create,
        cases_heatmap_download,
        cases_image_download,
        cases_list,
        cases_retrieve,
    )
    from fracture_portal_client.api.review import (
        review_claim,
        review_queue_list,
        review_reads_submit,
    )
    from fracture_portal_client.models import (
        BodyPartEnum,
        CaseCreatedOutput,
        CaseCreateInputRequest,
        CaseDetailOutput,
        CasesListBodyPart,
        CasesListStatus,
        DecisionEnum,
        Error,
        ReadInputRequest,
        ReviewSubmitInputRequest,
    )
    from fracture_portal_client.types import File

    from diagnosis.services.models import model_version_register

    model_version_register(artifact_dir=tiny_model, activate=True)
    settings.SECOND_READ_RANDOM_PERCENT = 100  # every case gets a second (final) read
    url = live_server.url

    def client_for(user, scopes):
        raw, _ = issue_token(user, scopes)
        return AuthenticatedClient(base_url=url, token=raw, raise_on_unexpected_status=True)

    clin = client_for(clinician, ["read", "write"])
    rad_a = client_for(radiologist, ["read", "review"])
    rad_b = client_for(radiologist_b, ["read", "review"])

    def new_case(key: str, patient_ref: str = "PSN-0001"):
        return cases_create.sync_detailed(
            client=clin,
            body=CaseCreateInputRequest(
                patient_ref=patient_ref,
                body_part=BodyPartEnum.HAND,
                clinical_question="Fall on wrist",
                images=[_file(sample_paths[0])],
            ),
            idempotency_key=key,
        )

    # Create with an Idempotency-Key, then replay it.
    key = str(uuid.uuid4())
    created = new_case(key)
    assert created.status_code == 202, created.content
    assert isinstance(created.parsed, CaseCreatedOutput)
    assert created.parsed.replayed is False
    assert created.parsed.status.value in {"received", "queued", "predicting", "predicted"}
    replay = new_case(key)
    assert replay.status_code == 200
    assert (replay.parsed.id, replay.parsed.replayed) == (created.parsed.id, True)
    case_id = created.parsed.id

    # Poll until predicted, then read the result.
    deadline = time.monotonic() + 120
    while True:
        case = cases_retrieve.sync(case_id, client=clin)
        assert isinstance(case, CaseDetailOutput)
        if case.status.value not in {"received", "queued", "predicting"}:
            break
        assert time.monotonic() < deadline, "no prediction in time"
        time.sleep(0.5)
    assert case.status.value == "predicted"
    (image,) = case.images
    prediction = image.prediction
    assert 0.0 <= prediction.probability <= 1.0
    assert prediction.label.value in {"fractured", "not_fractured"}
    assert prediction.heatmap_url.endswith(f"/images/{image.id}/heatmap/")
    assert isinstance(image.id, int)
    # A classifier-only version (the tiny test model) marks no sites, and says so.
    assert prediction.localises is False
    assert prediction.candidates == []
    assert image.width > 0  # the frame candidates are drawn in
    assert image.height > 0

    # Downloads are bytes; their errors are parsed JSON.
    heatmap = cases_heatmap_download.sync_detailed(case_id, image.id, client=clin)
    assert heatmap.status_code == 200
    assert isinstance(heatmap.parsed, File)
    assert heatmap.parsed.payload.read().startswith(PNG_MAGIC)
    assert heatmap.headers["content-type"] == "image/png"
    assert "attachment" in heatmap.headers["content-disposition"]
    picture = cases_image_download.sync(case_id, image.id, client=clin)
    assert picture.payload.read().startswith(PNG_MAGIC)
    missing_image = cases_image_download.sync_detailed(case_id, image.id + 10_000, client=clin)
    assert missing_image.status_code == 404
    assert missing_image.parsed.code == "not_found"

    # List with filters.
    listed = cases_list.sync(
        client=clin, status=CasesListStatus.PREDICTED, body_part=CasesListBodyPart.HAND
    )
    assert [row.id for row in listed.results] == [case_id]
    assert listed.results[0].image_count == 1
    assert cases_list.sync(client=clin, status=CasesListStatus.REVIEWED).count == 0
    assert cases_list.sync(client=clin, created_after=case.created_at).count == 1

    # Review: queue, claim, first read, then the second (final) read by another radiologist.
    queue = review_queue_list.sync(client=rad_a)
    assert [(row.id, row.stage) for row in queue.results] == [(case_id, 1)]
    claim = review_claim.sync(case_id, client=rad_a)
    assert (claim.claimed_by, claim.stage) == ("rad_a", 1)
    taken = review_claim.sync_detailed(case_id, client=rad_b)
    assert taken.status_code == 409
    assert isinstance(taken.parsed, Error)
    assert taken.parsed.code == "claimed_by_other"
    read = ReviewSubmitInputRequest(
        reads=[ReadInputRequest(image_id=image.id, decision=DecisionEnum.CONFIRM)]
    )
    after_first = review_reads_submit.sync(case_id, client=rad_a, body=read)
    assert after_first.review.needs_second_read is True
    assert after_first.status.value != "reviewed"
    assert review_claim.sync(case_id, client=rad_b).stage == 2
    final = review_reads_submit.sync(case_id, client=rad_b, body=read)
    assert final.status.value == "reviewed"
    assert final.review.final_label == prediction.label
    assert [r.read_number.value for r in final.images[0].reads] == [1, 2]
    assert cases_retrieve.sync(case_id, client=clin).review.final_label == prediction.label

    # Cancel: a pending case can be cancelled, a reviewed one answers 409.
    other = new_case(str(uuid.uuid4()), patient_ref="PSN-0002")
    cancelled = cases_cancel.sync(other.parsed.id, client=clin)
    assert cancelled.status.value == "cancelled"
    refused = cases_cancel.sync_detailed(case_id, client=clin)
    assert (refused.status_code, refused.parsed.code) == (409, "invalid_state")

    # Error shapes: 401, 403, 404, 413, 429 (409 above), each parsed into `Error`.
    anonymous = cases_list.sync_detailed(client=Client(base_url=url))
    assert (anonymous.status_code, anonymous.parsed.code) == (401, "not_authenticated")
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="api"'
    bad_token = AuthenticatedClient(base_url=url, token="fp_deadbeef_nope")
    rejected = cases_list.sync_detailed(client=bad_token)
    assert (rejected.status_code, rejected.parsed.code) == (401, "authentication_failed")
    read_only = client_for(clinician, ["read"])
    forbidden = cases_create.sync_detailed(
        client=read_only,
        body=CaseCreateInputRequest(
            patient_ref="PSN-0003", body_part=BodyPartEnum.HAND, images=[_file(sample_paths[0])]
        ),
    )
    assert (forbidden.status_code, forbidden.parsed.code) == (403, "insufficient_scope")
    not_found = cases_retrieve.sync_detailed(uuid.uuid4(), client=clin)
    assert (not_found.status_code, not_found.parsed.code) == (404, "not_found")
    settings.UPLOAD_MAX_FILE_BYTES = 1024
    too_large = new_case(str(uuid.uuid4()), patient_ref="PSN-0004")
    assert (too_large.status_code, too_large.parsed.code) == (413, "file_too_large")
    monkeypatch.setattr(
        TokenScopeRateThrottle,
        "THROTTLE_RATES",
        {**TokenScopeRateThrottle.THROTTLE_RATES, "read": "3/min"},
    )
    answers = [cases_list.sync_detailed(client=clin) for _ in range(4)]
    throttled = answers[-1]
    assert throttled.status_code == 429
    assert isinstance(throttled.parsed, Error)
    assert throttled.parsed.code == "throttled"
    assert int(throttled.headers["retry-after"]) > 0
    assert throttled.parsed.extra["retry_after_seconds"] > 0
    assert Case.objects.filter(source="api").count() == 2  # the refused uploads stored nothing


@pytest.mark.slow
def test_openapi_generator_python_client_does_the_flow(
    live_server,
    transactional_db,
    eager_tasks,
    tiny_model,
    sample_paths,
    settings,
    tmp_path,
    issue_token,
    clinician,
    radiologist,
    monkeypatch,
):
    if shutil.which("java") is None:  # a missing tool is an error, never a skip
        pytest.fail("java not found: apt-get install -y default-jre-headless")
    from diagnosis.services.models import model_version_register

    model_version_register(artifact_dir=tiny_model, activate=True)
    settings.SECOND_READ_RANDOM_PERCENT = 0
    settings.SECOND_READ_MODEL_POSITIVE = False
    settings.SECOND_READ_ON_DISAGREEMENT = False
    clin_raw, _ = issue_token(clinician, ["read", "write"])
    rad_raw, _ = issue_token(radiologist, ["read", "review"])
    _, site = _generate(
        "generate-client-openapi-generator",
        "fracture_portal_openapi",
        url=live_server.url,
        token=clin_raw,
        tmp_path=tmp_path,
    )
    with _imported(site, "fracture_portal_openapi") as client:
        clin = client.ApiClient(client.Configuration(host=live_server.url, access_token=clin_raw))
        rad = client.ApiClient(client.Configuration(host=live_server.url, access_token=rad_raw))
        cases, review = client.CasesApi(clin), client.ReviewApi(rad)
        upload = [(sample_paths[0].name, sample_paths[0].read_bytes())]
        key = str(uuid.uuid4())
        first = cases.cases_create_with_http_info(
            patient_ref="PSN-0001", body_part="hand", images=upload, idempotency_key=key
        )
        again = cases.cases_create_with_http_info(
            patient_ref="PSN-0001", body_part="hand", images=upload, idempotency_key=key
        )
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.data.id == first.data.id
        assert again.data.replayed is True
        case_id = first.data.id
        deadline = time.monotonic() + 120
        while (case := cases.cases_retrieve(case_id)).status in {
            "received",
            "queued",
            "predicting",
        }:
            assert time.monotonic() < deadline, "no prediction in time"
            time.sleep(0.5)
        assert case.status == "predicted"
        image = case.images[0]
        assert 0.0 <= image.prediction.probability <= 1.0
        assert (image.prediction.localises, image.prediction.candidates) == (False, [])
        # (case, image) in the URL's order; downloads are bytes
        assert cases.cases_heatmap_download(case_id, image.id).startswith(PNG_MAGIC)
        assert cases.cases_image_download(case_id, image.id).startswith(PNG_MAGIC)
        listed = cases.cases_list(status="predicted", body_part="hand")
        assert [row.id for row in listed.results] == [case_id]
        assert [row.id for row in review.review_queue_list(stage=1).results] == [case_id]
        assert review.review_claim(case_id).claimed_by == "rad_a"
        reads = client.ReviewSubmitInputRequest(
            reads=[client.ReadInputRequest(image_id=image.id, decision="confirm")]
        )
        final = review.review_reads_submit(case_id, reads)
        assert final.status == "reviewed"
        assert final.review.final_label == image.prediction.label
        with pytest.raises(client.exceptions.NotFoundException) as missing:
            cases.cases_heatmap_download(case_id, image.id + 10_000)
        assert json.loads(missing.value.body)["code"] == "not_found"
        with pytest.raises(client.exceptions.ConflictException) as refused:
            cases.cases_cancel(case_id)
        assert json.loads(refused.value.body)["code"] == "invalid_state"
        anonymous = client.CasesApi(client.ApiClient(client.Configuration(host=live_server.url)))
        with pytest.raises(client.exceptions.UnauthorizedException) as unauthenticated:
            anonymous.cases_list()
        assert unauthenticated.value.headers["WWW-Authenticate"] == 'Bearer realm="api"'
        # Cancel a second case; then 403, 413 and 429, each a JSON error body.
        other = cases.cases_create(patient_ref="PSN-0002", body_part="hand", images=upload)
        assert cases.cases_cancel(other.id).status == "cancelled"
        read_raw, _ = issue_token(clinician, ["read"])
        read_only = client.CasesApi(
            client.ApiClient(client.Configuration(host=live_server.url, access_token=read_raw))
        )
        with pytest.raises(client.exceptions.ForbiddenException) as forbidden:
            read_only.cases_create(patient_ref="PSN-0003", body_part="hand", images=upload)
        assert json.loads(forbidden.value.body)["code"] == "insufficient_scope"
        settings.UPLOAD_MAX_FILE_BYTES = 1024
        with pytest.raises(client.exceptions.ApiException) as too_large:
            cases.cases_create(patient_ref="PSN-0004", body_part="hand", images=upload)
        assert too_large.value.status == 413
        assert json.loads(too_large.value.body)["code"] == "file_too_large"
        monkeypatch.setattr(
            TokenScopeRateThrottle,
            "THROTTLE_RATES",
            {**TokenScopeRateThrottle.THROTTLE_RATES, "read": "3/min"},
        )
        # The generated client retries a 429 after its Retry-After by default (urllib3's retry
        # rule); a client that handles throttling itself turns that off.
        no_retry = client.Configuration(host=live_server.url, access_token=clin_raw)
        no_retry.retries = False
        impatient = client.CasesApi(client.ApiClient(no_retry))
        answers: list[object] = []
        for _ in range(4):  # the 4th read of the window at the latest is over 3/min
            try:
                answers.append(impatient.cases_list())
            except client.exceptions.ApiException as exc:
                answers.append(exc)
        throttled = answers[-1]
        assert isinstance(throttled, client.exceptions.ApiException)
        assert throttled.status == 429
        assert json.loads(throttled.body)["code"] == "throttled"
        assert int(throttled.headers["Retry-After"]) > 0
        assert Case.objects.filter(source="api").count() == 2  # the refused uploads stored nothing


@pytest.mark.slow
def test_openapi_typescript_client_does_the_whole_flow(
    live_server,
    transactional_db,
    eager_tasks,
    tiny_model,
    sample_paths,
    settings,
    tmp_path,
    issue_token,
    admin_user,
    clinician,
    radiologist,
    radiologist_b,
):
    """tests/clients/typescript/client.ts, typed by openapi-typescript from the live schema and
    compiled with tsc (docs/api.md's commands), does the whole flow with openapi-fetch against the
    live server (run.mjs, also run as docs/api.md shows): create as multipart and replay, poll,
    the result, downloads as Blobs, filters, two reads by two radiologists, cancel, and the error
    answers, each parsed into `Error`. 429 is left to the Python client's test: the throttle
    counts per scope, so it would also stop the polling."""
    for tool in ("npm", "node"):
        if shutil.which(tool) is None:  # a missing tool is an error, never a skip
            pytest.fail(f"{tool} not found: apt-get install -y nodejs npm")
    from diagnosis.services.models import model_version_register

    model_version_register(artifact_dir=tiny_model, activate=True)
    settings.SECOND_READ_RANDOM_PERCENT = 100  # every case gets a second (final) read
    sample = sample_paths[0]
    size = sample.stat().st_size
    settings.UPLOAD_MAX_FILE_BYTES = 2 * size  # the sample fits, the oversize upload does not
    oversize = 4 * size
    assert oversize < settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # refused per file, not per request
    for name in ("package.json", "package-lock.json", "tsconfig.json", "client.ts", "run.mjs"):
        shutil.copy(TYPESCRIPT / name, tmp_path / name)
    schema_token, _ = issue_token(admin_user, ["read"])
    _generate(
        "generate-client-typescript", "", url=live_server.url, token=schema_token, tmp_path=tmp_path
    )
    schema = (tmp_path / "schema.d.ts").read_text()
    assert '"image/png": string' in schema  # binary download (read it with parseAs: "blob")
    assert "clinical_question?: string" in schema  # optional fields stay optional
    assert (tmp_path / "dist" / "client.js").exists()

    result = _run_block(
        "run-client-typescript",
        tmp_path=tmp_path,
        env={
            "FRACTURE_PORTAL_URL": live_server.url,
            "FRACTURE_PORTAL_TOKEN": issue_token(clinician, ["read", "write"])[0],
            "FRACTURE_PORTAL_READ_TOKEN": issue_token(clinician, ["read"])[0],
            "FRACTURE_PORTAL_REVIEW_TOKEN": issue_token(radiologist, ["read", "review"])[0],
            "FRACTURE_PORTAL_SECOND_REVIEW_TOKEN": issue_token(radiologist_b, ["read", "review"])[
                0
            ],
            "FRACTURE_PORTAL_IMAGE": str(sample),
            "FRACTURE_PORTAL_OVERSIZE_BYTES": str(oversize),
        },
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])

    created, replay, outcome = summary["created"], summary["replay"], summary["result"]
    case_id = created["id"]
    assert (created["status"], created["replayed"]) == (202, False)
    assert created["caseStatus"] in {"received", "queued", "predicting", "predicted"}
    assert (replay["status"], replay["id"], replay["replayed"]) == (200, case_id, True)
    assert summary["polls"] >= 1
    case = Case.objects.get(uuid=case_id)
    (image,) = case.images.all()
    prediction = image.predictions.get()
    assert outcome["status"] == "predicted"
    assert (outcome["imageCount"], outcome["imageId"]) == (1, image.id)
    assert outcome["probability"] == pytest.approx(prediction.probability)
    assert 0.0 <= outcome["probability"] <= 1.0
    assert outcome["label"] in {"fractured", "not_fractured"}
    assert outcome["heatmapUrl"].endswith(f"/images/{image.id}/heatmap/")
    # A classifier-only version (the tiny test model) marks no sites, and says so.
    assert (outcome["localises"], outcome["candidates"], outcome["sites"]) == (False, 0, [])
    assert (outcome["width"], outcome["height"]) == (image.width, image.height)
    assert image.width > 0  # the frame candidates are drawn in
    assert image.height > 0

    downloads = summary["downloads"]
    heatmap, picture = downloads["heatmap"], downloads["image"]
    assert (heatmap["status"], heatmap["contentType"], heatmap["pngMagic"]) == (
        200,
        "image/png",
        True,
    )
    assert "attachment" in heatmap["contentDisposition"]
    assert heatmap["bytes"] == prediction.heatmap.size
    assert (picture["status"], picture["pngMagic"]) == (200, True)
    assert picture["bytes"] > 0
    assert downloads["missingImage"] == {"status": 404, "code": "not_found"}

    assert summary["list"] == {
        "predictedIds": [case_id],
        "predictedImageCount": 1,
        "reviewedCount": 0,
        "createdAfterCount": 1,
    }

    review = summary["review"]
    assert review["queue"] == [{"id": case_id, "stage": 1}]
    assert review["claim"] == {"claimedBy": "rad_a", "stage": 1}
    assert review["claimByOther"] == {"status": 409, "code": "claimed_by_other"}
    assert review["firstRead"]["needsSecondRead"] is True
    assert review["firstRead"]["status"] != "reviewed"
    assert review["secondClaim"] == {"claimedBy": "rad_b", "stage": 2}
    assert review["finalRead"] == {
        "status": "reviewed",
        "finalLabel": outcome["label"],
        "readNumbers": [1, 2],
    }
    assert review["caseFinalLabel"] == outcome["label"]
    case.refresh_from_db()
    assert (case.status, case.final_label) == ("reviewed", outcome["label"])

    cancel = summary["cancel"]
    assert cancel["status"] == "cancelled"
    assert Case.objects.get(uuid=cancel["id"]).status == "cancelled"
    assert cancel["refused"] == {"status": 409, "code": "invalid_state"}

    errors = summary["errors"]
    assert errors["anonymous"] == {
        "status": 401,
        "code": "not_authenticated",
        "wwwAuthenticate": 'Bearer realm="api"',
    }
    assert errors["badToken"] == {"status": 401, "code": "authentication_failed"}
    assert errors["readOnlyCreate"] == {"status": 403, "code": "insufficient_scope"}
    assert errors["notFound"] == {"status": 404, "code": "not_found"}
    assert errors["tooLarge"] == {"status": 413, "code": "file_too_large", "bytes": oversize}
    assert Case.objects.filter(source="api").count() == 2  # the refused uploads stored nothing
