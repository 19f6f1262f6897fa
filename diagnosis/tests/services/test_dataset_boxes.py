"""Fracture boxes in dataset snapshots: the agreed final boxes of reviewed fractured images and
the base dataset's expert boxes go into the manifest, boxes.csv (the training data's format, in
pixels of the exported file) and the counts/README; `ml.data.read_boxes` reads them back."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest

from diagnosis.models import Label, Review
from diagnosis.services.datasets import (
    BOX_COLUMNS,
    snapshot_create,
    snapshot_export,
    snapshot_materialize,
    snapshot_read_manifest,
)
from diagnosis.tests.retrain_helpers import make_base_dataset, reviewed_case

F, N = Label.FRACTURED, Label.NOT_FRACTURED
pytestmark = pytest.mark.django_db

BOX_A = {"x": 0.25, "y": 0.5, "w": 0.25, "h": 0.125, "origin": "model_accepted"}
BOX_B = {"x": 0.0, "y": 0.0, "w": 0.5, "h": 0.5, "origin": "reader"}


@pytest.fixture(autouse=True)
def _training_dirs(settings, tmp_path):
    settings.MODEL_STORE_DIR = tmp_path / "models"
    settings.TRAINING_WORK_DIR = tmp_path / "training"


def _set_boxes(case, read_number, boxes):
    Review.objects.filter(image__case=case, read_number=read_number).update(boxes=boxes)


@pytest.fixture
def boxed_snapshot(radiologist, radiologist_b, tmp_path):
    """Base (with expert boxes) + reviewed images: a fractured one with two boxes, a fractured
    one whose second reader agreed without drawing (the first reader's box counts), a
    fractured one without a box, and not-fractured ones."""
    base = make_base_dataset(
        tmp_path / "base", per_class={"train": 3, "val": 1, "test": 1}, with_boxes=True
    )
    two = reviewed_case(reviewer=radiologist, labels=[F], seed=1)
    _set_boxes(two, 1, [BOX_A, BOX_B])
    agreed = reviewed_case(
        reviewer=radiologist, labels=[F], seed=2, second_reader=radiologist_b, second_labels=[F]
    )
    _set_boxes(agreed, 1, [BOX_B])
    reviewed_case(reviewer=radiologist, labels=[F], seed=3)
    for seed in range(4, 8):
        reviewed_case(reviewer=radiologist, labels=[N], seed=seed)
    snapshot = snapshot_create(base_dir=base)
    return snapshot, two, agreed


def test_manifest_rows_carry_pixel_boxes_with_their_origin(boxed_snapshot):
    snapshot, two, agreed = boxed_snapshot
    rows = {row["key"]: row for row in snapshot_read_manifest(snapshot=snapshot)["items"]}
    image = two.images.get()
    w, h = image.width, image.height
    assert rows[f"img:{image.pk}"]["boxes"] == [
        {"x0": w / 4, "y0": h / 2, "x1": w / 2, "y1": h * 5 / 8, "origin": "model_accepted"},
        {"x0": 0.0, "y0": 0.0, "x1": w / 2, "y1": h / 2, "origin": "reader"},
    ]
    # the second read agreed without drawing: the first reader's box is the agreed one
    other = agreed.images.get()
    assert rows[f"img:{other.pk}"]["boxes"] == [
        {"x0": 0.0, "y0": 0.0, "x1": other.width / 2, "y1": other.height / 2, "origin": "reader"}
    ]
    base_fractured = [r for r in rows.values() if r["source"] == "base" and r["label"] == F]
    assert base_fractured
    assert all(
        r["boxes"] == [{"x0": 10.0, "y0": 12.5, "x1": 20.0, "y1": 24.0, "origin": "expert"}]
        for r in base_fractured
    )
    assert all(not r["boxes"] for r in rows.values() if r["label"] == N)


def test_counts_say_how_many_boxes_and_from_where(boxed_snapshot):
    snapshot, _, _ = boxed_snapshot
    boxes = snapshot.counts["boxes"]
    assert boxes["by_source"] == {"review": 3, "base": 5}
    assert boxes["total"] == 8
    assert boxes["images"] == 7
    assert boxes["by_origin"] == {"model_accepted": 1, "reader": 2, "expert": 5}
    assert boxes["fractured_without_boxes"] == 1
    assert sum(boxes["by_split"].values()) == 8


def test_materialized_boxes_csv_is_what_ml_reads(boxed_snapshot, tmp_path):
    from ml.data import load_records, read_boxes
    from ml.preprocess import read_image

    snapshot, two, _ = boxed_snapshot
    out = snapshot_materialize(snapshot=snapshot, dest=tmp_path / "data")
    with (out / "boxes.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == BOX_COLUMNS
        rows = list(reader)
    assert len(rows) == 8
    boxes = read_boxes(out / "boxes.csv")
    records = {r.id: r for r in load_records(out)}
    image = two.images.get()
    w, h = image.width, image.height
    assert boxes[f"img_{image.pk}"] == [(w / 4, h / 2, w / 2, h * 5 / 8), (0.0, 0.0, w / 2, h / 2)]
    # ids match manifest.csv, splits agree, and each box lies inside its file's pixels
    for row in rows:
        record = records[row["id"]]
        assert record.split == row["split"]
        height, width = read_image(record.path).shape[:2]
        assert 0 <= float(row["x0"]) < float(row["x1"]) <= width
        assert 0 <= float(row["y0"]) < float(row["y1"]) <= height


def test_export_has_boxes_csv_and_the_readme_counts_them(boxed_snapshot, admin_user):
    snapshot, _, _ = boxed_snapshot
    with snapshot_export(snapshot=snapshot, user=admin_user) as fh:
        archive = zipfile.ZipFile(io.BytesIO(fh.read()))
    rows = list(csv.DictReader(io.StringIO(archive.read("boxes.csv").decode())))
    assert len(rows) == 8
    names = set(archive.namelist())
    for row in rows:  # every box names an exported image of the same split
        assert any(n.startswith(f"images/{row['split']}/") and row["id"] in n for n in names)
    readme = archive.read("README.md").decode()
    assert "## Fracture boxes" in readme
    assert "8 boxes on 7 images" in readme
    assert "model mark accepted as is 1" in readme
    assert "Fractured images without a box: 1." in readme


def test_bad_base_boxes_csv_is_refused_in_words(tmp_path):
    from diagnosis.services.datasets import BaseDatasetError

    base = make_base_dataset(tmp_path / "base", per_class={"train": 2, "val": 1, "test": 1})
    (base / "boxes.csv").write_text(
        "id,split,x0,y0,x1,y1,polygon\nbase_IMG0000000,train,a,1,2,3,\n"
    )
    with pytest.raises(BaseDatasetError, match=r"Bad boxes\.csv row"):
        snapshot_create(base_dir=base)


def test_snapshot_page_shows_the_box_counts(boxed_snapshot, admin_user, client_for):
    from django.urls import reverse

    snapshot, _, _ = boxed_snapshot
    page = client_for(admin_user).get(reverse("registry:snapshot_detail", args=[snapshot.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert "8 on 7 images" in body
    assert "1 model marks accepted" in body
    assert "boxes.csv" in body
