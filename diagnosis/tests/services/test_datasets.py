"""Dataset snapshots: labels from reads, group-aware frozen split, counts, materialising, export."""

from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter

import pytest
from django.core.files.storage import default_storage

from diagnosis.models import AuditEvent, Label
from diagnosis.services import datasets
from diagnosis.services.datasets import (
    EmptySnapshotError,
    snapshot_create,
    snapshot_export,
    snapshot_materialize,
    snapshot_read_manifest,
)
from diagnosis.tests.retrain_helpers import make_array, make_base_dataset, reviewed_case

F, N = Label.FRACTURED, Label.NOT_FRACTURED
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _training_dirs(settings, tmp_path):
    """Model artifacts, work folders and fingerprint caches under the test's tmp dir."""
    settings.MODEL_STORE_DIR = tmp_path / "models"
    settings.TRAINING_WORK_DIR = tmp_path / "training"


def _by_key(snapshot):
    return {row["key"]: row for row in snapshot_read_manifest(snapshot=snapshot)["items"]}


def test_first_snapshot_without_base_defines_a_group_aware_split(radiologist, admin_user):
    cases = [
        reviewed_case(reviewer=radiologist, labels=[F, N] if i % 3 else [N, N], seed=i)
        for i in range(30)
    ]
    # one patient with three cases: all of their images must land in one split
    cases += [
        reviewed_case(reviewer=radiologist, labels=[F], seed=seed, patient_ref="PT-1")
        for seed in (100, 101, 102)
    ]

    snapshot = snapshot_create(user=admin_user, base_dir="")

    rows = _by_key(snapshot)
    assert len(rows) == 63
    assert snapshot.frozen_test_of is None
    assert snapshot.reviews_included == 63
    assert {r["split"] for r in rows.values()} == {"train", "val", "test"}
    patient_splits = {
        rows[f"img:{image.pk}"]["split"] for case in cases[-3:] for image in case.images.all()
    }
    assert len(patient_splits) == 1
    counts = snapshot.counts
    assert sum(counts[s]["total"] for s in ("train", "val", "test")) == 63
    assert counts["test"][F] > 0
    assert counts["test"][N] > 0
    assert counts["sources"] == {"review": 63}
    event = AuditEvent.objects.get(action="snapshot.create")
    assert event.actor_id == admin_user.pk
    assert event.object_id == str(snapshot.pk)
    # reviewed images are copied, content-addressed, into snapshot storage
    for row in rows.values():
        assert default_storage.exists(row["path"])


def test_label_comes_from_agreeing_reads_or_adjudication_and_disagreement_waits(
    radiologist, radiologist_b
):
    agreed = reviewed_case(
        reviewer=radiologist, labels=[F], seed=1, second_reader=radiologist_b, second_labels=[F]
    )
    disputed = reviewed_case(
        reviewer=radiologist, labels=[F], seed=2, second_reader=radiologist_b, second_labels=[N]
    )
    for seed in range(3, 12):
        reviewed_case(reviewer=radiologist, labels=[N], seed=seed)

    rows = _by_key(snapshot_create(base_dir=""))

    assert rows[f"img:{agreed.images.get().pk}"]["label"] == F
    assert f"img:{disputed.images.get().pk}" not in rows


def test_later_snapshot_keeps_the_frozen_test_split_and_new_images_stay_out_of_it(
    radiologist, tmp_path
):
    base = make_base_dataset(tmp_path / "base")
    for seed in range(10):
        reviewed_case(reviewer=radiologist, labels=[F if seed % 2 else N], seed=seed)
    first = snapshot_create(base_dir=base)
    first_rows = _by_key(first)
    test_keys = {k for k, r in first_rows.items() if r["split"] == "test"}
    assert test_keys == {
        k for k in first_rows if k.startswith("base:") and first_rows[k]["split"] == "test"
    }
    assert len(test_keys) == 10  # the base's test split, and no reviewed image
    assert first.counts["sources"] == {"base": 44, "review": 10}

    # new reviews, one of them the same picture as a frozen test image (re-uploaded, flipped)
    test_row = next(first_rows[k] for k in sorted(test_keys))
    test_array = make_array_from_base(base, test_row["path"])
    dup = reviewed_case(
        reviewer=radiologist, labels=[test_row["label"]], seed=50, arrays=[test_array[:, ::-1]]
    )
    for seed in range(60, 70):
        reviewed_case(reviewer=radiologist, labels=[F], seed=seed)

    second = snapshot_create()  # base folder carried over from the previous snapshot

    rows = _by_key(second)
    assert second.frozen_test_of == first
    assert second.base_dataset == first.base_dataset
    assert {k for k, r in rows.items() if r["split"] == "test"} == test_keys
    for key, row in first_rows.items():
        assert rows[key]["split"] == row["split"]  # nothing moves between splits
    dup_key = f"img:{dup.images.get().pk}"
    assert dup_key not in rows
    manifest = snapshot_read_manifest(snapshot=second)
    assert {"key": dup_key, "reason": "group_in_frozen_test"} in manifest["excluded"]
    assert second.counts["excluded"] == {"group_in_frozen_test": 1}
    assert second.reviews_included == 20

    third = snapshot_create()
    assert third.frozen_test_of == first  # always the root, never a chain
    # the base folder was fingerprinted once and then read from the cache
    assert len(list((tmp_path / "training" / "fingerprints").glob("*.npz"))) == 1
    assert {k: r["split"] for k, r in _by_key(third).items()} == {
        k: r["split"] for k, r in rows.items()
    }


def make_array_from_base(base, rel_path):
    import numpy as np
    from PIL import Image

    return np.array(Image.open(base / rel_path).convert("L"))


def test_empty_snapshot_is_refused():
    with pytest.raises(EmptySnapshotError):
        snapshot_create(base_dir="")


def test_bad_base_manifest_is_refused(tmp_path):
    (tmp_path / "manifest.csv").write_text("id,split,label\nx,holdout,fractured\n")
    with pytest.raises(datasets.BaseDatasetError):
        snapshot_create(base_dir=tmp_path)
    (tmp_path / "manifest.csv").write_text(
        "id,split,label,path\nx,train,fractured,../../etc/passwd\n"
    )
    with pytest.raises(datasets.BaseDatasetError):
        snapshot_create(base_dir=tmp_path)


def test_materialize_writes_the_folder_layout_training_reads(radiologist, tmp_path):
    base = make_base_dataset(tmp_path / "base", per_class={"train": 4, "val": 2, "test": 2})
    for seed in range(6):
        reviewed_case(reviewer=radiologist, labels=[F, N], seed=seed)
    snapshot = snapshot_create(base_dir=base)

    out = snapshot_materialize(snapshot=snapshot, dest=tmp_path / "data")

    with (out / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == snapshot.counts["total"] == 28
    files = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*.*")
        if p.name not in ("manifest.csv", "boxes.csv")
    )
    assert len(files) == 28
    assert Counter(f.split("/")[0] for f in files) == Counter(r["split"] for r in rows)
    for row in rows:
        matches = list((out / row["split"] / row["label"]).glob(f"{row['id']}.*"))
        assert len(matches) == 1
        assert matches[0].stat().st_size > 0


def test_export_zip_has_images_manifest_and_attribution(radiologist, admin_user, tmp_path):
    base = make_base_dataset(tmp_path / "base", per_class={"train": 3, "val": 1, "test": 1})
    for seed in range(4):
        reviewed_case(reviewer=radiologist, labels=[N], seed=seed)
    snapshot = snapshot_create(base_dir=base)

    with snapshot_export(snapshot=snapshot, user=admin_user) as fh:
        archive = zipfile.ZipFile(io.BytesIO(fh.read()))
    names = archive.namelist()
    assert "manifest.csv" in names
    assert "README.md" in names
    assert "LICENSE-DATA.md" in names
    assert sum(n.startswith("images/") for n in names) == snapshot.counts["total"] == 14
    readme = archive.read("README.md").decode()
    assert "CC BY 4.0" in readme
    assert "FracAtlas" in readme
    assert "patient data" in readme
    assert AuditEvent.objects.filter(action="snapshot.export", actor_id=admin_user.pk).count() == 1


def test_the_same_picture_uploaded_for_two_patients_is_kept_in_one_split(radiologist):
    picture = make_array(4242, F)
    a = reviewed_case(reviewer=radiologist, labels=[F], seed=1, arrays=[picture])
    b = reviewed_case(reviewer=radiologist, labels=[F], seed=2, arrays=[picture[::-1, :]])
    for seed in range(3, 40):
        reviewed_case(reviewer=radiologist, labels=[F if seed % 3 else N], seed=seed)

    rows = _by_key(snapshot_create(base_dir=""))

    first, second = rows[f"img:{a.images.get().pk}"], rows[f"img:{b.images.get().pk}"]
    assert first["group"] == second["group"]
    assert first["split"] == second["split"]
