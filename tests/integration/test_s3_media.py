"""Media on S3-compatible object storage: the storage that settings.py builds from STORAGE_BACKEND=s3
and the AWS_* variables, against moto's S3 server on a loopback port.

The real flow runs on it: an upload through `case_create` stores the canonical PNG in the bucket, an
in-process prediction batch writes the heat-map there, and the permission-checked view serves the
heat-map and renders the captioned overlay into the bucket on first request; a foreign user gets 404.
"""

from __future__ import annotations

import io
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files import storage as django_storage
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import reverse
from django.utils.functional import empty
from PIL import Image

from diagnosis.models import Case, Prediction
from diagnosis.services.cases import case_create
from diagnosis.services.models import model_version_register
from diagnosis.services.prediction_results import prediction_run_batch
from diagnosis.tests import factories

pytestmark = pytest.mark.integration

BASE_DIR = Path(__file__).resolve().parents[2]
SETTINGS_FILE = BASE_DIR / "fracture_portal" / "settings.py"
SAMPLE = sorted((BASE_DIR / "samples").glob("*.jpg"))[0]
BUCKET = "portal-media-test"
S3_BACKEND = "storages.backends.s3.S3Storage"


def _settings_with(monkeypatch: pytest.MonkeyPatch, **variables: str) -> dict[str, Any]:
    """Execute settings.py afresh under these environment variables; its module globals."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE))


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials where boto3 looks for them, and no profile or config file of the host."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def bucket(s3_endpoint: str, s3_env: None) -> Iterator[Any]:
    """An empty bucket; yields a plain boto3 client for looking into it."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        listed = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        for obj in listed:
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])
        client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def s3_media(
    monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, bucket: Any
) -> Iterator[dict[str, Any]]:
    """Default storage = what settings.py configures for STORAGE_BACKEND=s3 and this endpoint."""
    configured = _settings_with(
        monkeypatch,
        STORAGE_BACKEND="s3",
        AWS_STORAGE_BUCKET_NAME=BUCKET,
        AWS_S3_ENDPOINT_URL=s3_endpoint,
        AWS_S3_REGION_NAME="us-east-1",
        AWS_S3_ADDRESSING_STYLE="path",
        AWS_S3_SERVER_SIDE_ENCRYPTION="AES256",
    )["STORAGES"]["default"]
    assert configured["BACKEND"] == S3_BACKEND
    from storages.backends.s3 import S3Storage

    assert isinstance(django_storage.storages["default"], FileSystemStorage)
    assert isinstance(default_storage, FileSystemStorage)  # the lazy default, set up
    with override_settings(STORAGES={**settings.STORAGES, "default": configured}):
        # override_settings sends setting_changed: Django drops its cached backends and the
        # lazy default_storage, which FileFields hold, and builds them anew from STORAGES.
        assert default_storage._wrapped is empty
        assert isinstance(django_storage.storages["default"], S3Storage)
        assert isinstance(default_storage, S3Storage)
        assert default_storage.bucket_name == BUCKET
        yield configured
    assert isinstance(default_storage, FileSystemStorage)


def _keys(client: Any) -> set[str]:
    return {obj["Key"] for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def _radiograph_png() -> bytes:
    """A real radiograph (samples/), downscaled and stored as a greyscale PNG."""
    with Image.open(SAMPLE) as im:
        small = im.convert("L")
        small.thumbnail((192, 192))
        buf = io.BytesIO()
        small.save(buf, "PNG")
    return buf.getvalue()


# --- settings ----------------------------------------------------------------------------------------


def test_s3_backend_needs_a_bucket(monkeypatch):
    monkeypatch.delenv("AWS_STORAGE_BUCKET_NAME", raising=False)
    with pytest.raises(ImproperlyConfigured, match="AWS_STORAGE_BUCKET_NAME must be set"):
        _settings_with(monkeypatch, STORAGE_BACKEND="s3")


@pytest.mark.parametrize("backend", ["s3", S3_BACKEND])
def test_s3_backend_options_come_from_the_environment(monkeypatch, backend):
    for name in (
        "AWS_S3_ENDPOINT_URL",
        "AWS_S3_REGION_NAME",
        "AWS_S3_ADDRESSING_STYLE",
        "AWS_S3_SERVER_SIDE_ENCRYPTION",
    ):
        monkeypatch.delenv(name, raising=False)
    storages = _settings_with(
        monkeypatch, STORAGE_BACKEND=backend, AWS_STORAGE_BUCKET_NAME="media"
    )["STORAGES"]
    assert storages["default"] == {
        "BACKEND": S3_BACKEND,
        "OPTIONS": {
            "bucket_name": "media",
            "endpoint_url": None,
            "region_name": None,
            "addressing_style": None,
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": True,
            "object_parameters": {},
        },
    }


# --- the real flow on a bucket ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ml.testing import make_tiny_artifact

    return make_tiny_artifact(tmp_path_factory.mktemp("s3-model") / "tiny", size=64, seed=0)


@pytest.mark.slow
@pytest.mark.django_db
def test_images_and_heatmaps_live_in_the_bucket_and_are_served_through_the_views(
    s3_media, bucket, tiny_artifact, django_capture_on_commit_callbacks
):
    model_version_register(artifact_dir=tiny_artifact, activate=True)
    owner = factories.ClinicianFactory(username="s3_owner")
    stranger = factories.ClinicianFactory(username="s3_stranger")

    with django_capture_on_commit_callbacks() as after_upload:
        case = case_create(
            user=owner,
            patient_ref="S3-1",
            body_part="hand",
            clinical_question="",
            files=[SimpleUploadedFile("wrist.png", _radiograph_png(), content_type="image/png")],
        )
    image = case.images.get()
    assert _keys(bucket) == {f"staging/{image.file.name}"}  # until the commit
    after_upload[0]()  # published: copied to its name in the bucket, the staged copy deleted
    assert _keys(bucket) == {image.file.name}
    stored = bucket.head_object(Bucket=BUCKET, Key=image.file.name)
    assert stored["ServerSideEncryption"] == "AES256"
    grantees = [
        g["Grantee"] for g in bucket.get_object_acl(Bucket=BUCKET, Key=image.file.name)["Grants"]
    ]
    assert not [g for g in grantees if "URI" in g]  # no public or all-users grant

    # What the commit would do: create the pending predictions. Their dispatch to the broker is
    # left out; the batch runs here, in-process, as a worker would run it.
    with django_capture_on_commit_callbacks() as dispatch:
        assert len(after_upload) == 2
        after_upload[1]()
    assert len(dispatch) == 1
    ids = list(Prediction.objects.filter(image=image).values_list("pk", flat=True))
    assert len(ids) == 1
    counts = prediction_run_batch(prediction_ids=ids, drain=False)
    assert counts["done"] == 1, counts
    prediction = Prediction.objects.get(pk=ids[0])
    assert prediction.status == Prediction.Status.DONE
    assert prediction.heatmap.name == f"heatmaps/prediction-{prediction.pk}.png"
    overlay_key = f"heatmaps/prediction-{prediction.pk}-overlay.png"
    assert _keys(bucket) == {image.file.name, prediction.heatmap.name}
    case.refresh_from_db()
    assert case.status == Case.Status.PREDICTED

    url = reverse("diagnosis:heatmap_file", args=[case.uuid, image.pk])
    client = Client()
    client.force_login(owner)
    heatmap = client.get(url)
    assert heatmap.status_code == 200
    assert heatmap["Content-Type"] == "image/png"
    assert heatmap["Cache-Control"].startswith("private")
    body = b"".join(heatmap.streaming_content)
    assert body == bucket.get_object(Bucket=BUCKET, Key=prediction.heatmap.name)["Body"].read()
    with Image.open(io.BytesIO(body)) as im:
        assert im.format == "PNG"

    overlay = client.get(url + "?kind=overlay")
    assert overlay.status_code == 200
    rendered = b"".join(overlay.streaming_content)
    assert rendered.startswith(b"\x89PNG")
    assert overlay_key in _keys(bucket)
    assert rendered == bucket.get_object(Bucket=BUCKET, Key=overlay_key)["Body"].read()
    again = client.get(url + "?kind=overlay")  # served from the bucket now
    assert again.status_code == 200
    assert b"".join(again.streaming_content) == rendered

    foreign = Client()
    foreign.force_login(stranger)
    assert foreign.get(url).status_code == 404
    assert foreign.get(url + "?kind=overlay").status_code == 404
    assert not list(Path(settings.MEDIA_ROOT).rglob("*.png"))  # nothing on the local disk
