"""Time dataset snapshots on a full base folder plus reviewed images, and check the leakage guard.

Creates N reviewed cases (generated radiograph-like images) plus K re-uploads of base TEST images
(flipped and re-encoded as PNG, as a clinician might upload a picture that is already in the data),
then freezes two snapshots (cold: the base folder is fingerprinted; warm: from the cache) and exports
one as a zip. The re-uploads must all be left out of the snapshot (never in the frozen test split).

Usage (a fresh scratch database; it is migrated here):
    dropdb -h 127.0.0.1 -U postgres --if-exists fp_retrain_bench
    createdb -h 127.0.0.1 -U postgres fp_retrain_bench
    DJANGO_DEBUG=1 DATABASE_URL=postgres://postgres@127.0.0.1:5432/fp_retrain_bench \\
        .venv/bin/python bench/retrain_snapshot.py --data PATH/TO/fracture-xray --reviews 200
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fracture_portal.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("CELERY_BROKER_URL", "")


def _png(array: object) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--reviews", type=int, default=200, help="generated reviewed images")
    parser.add_argument("--reuploads", type=int, default=20, help="re-uploaded base test images")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-snapshot")
    args = parser.parse_args()

    import django

    django.setup()
    import numpy as np
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile
    from django.core.management import call_command

    from diagnosis.models import Case, DatasetSnapshot, Review, TrainingRun, XrayImage
    from diagnosis.services.datasets import snapshot_create, snapshot_export

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    settings.MEDIA_ROOT = args.work / "media"
    settings.TRAINING_WORK_DIR = args.work / "training"
    call_command("migrate", verbosity=0)
    TrainingRun.objects.all().delete()
    DatasetSnapshot.objects.update(frozen_test_of=None)
    DatasetSnapshot.objects.all().delete()
    Case.objects.all().delete()
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username="bench-reader")

    with (args.data / "manifest.csv").open() as fh:
        test_rows = [r for r in csv.DictReader(fh) if r["split"] == "test"][: args.reuploads]
    rng = np.random.default_rng(0)
    images: list[tuple[np.ndarray, str, str]] = []
    for i in range(args.reviews):
        label = "fractured" if i % 5 == 0 else "not_fractured"
        array = rng.integers(0, 255, (int(rng.integers(300, 500)), int(rng.integers(300, 500))))
        images.append((array.astype(np.uint8), label, f"BENCH-{i // 2:05d}"))
    from ml.preprocess import read_image

    for j, row in enumerate(test_rows):
        array = read_image(args.data / row["split"] / row["label"] / f"{row['id']}.jpg")
        images.append((np.ascontiguousarray(array[:, ::-1]), row["label"], f"REUP-{j:05d}"))
    for n, (array, label, ref) in enumerate(images):
        case = Case.objects.create(
            patient_ref=ref,
            body_part="hand",
            created_by=user,
            status=Case.Status.REVIEWED,
            final_label=label,
        )
        image = XrayImage.objects.create(
            case=case,
            file=ContentFile(_png(array), name=f"bench-{n}.png"),
            sha256=f"{n:064x}",
            width=array.shape[1],
            height=array.shape[0],
            source_format="png",
        )
        Review.objects.create(image=image, reviewer=user, decision="confirm", final_label=label)

    timings = {}
    started = time.perf_counter()
    cold = snapshot_create(base_dir=args.data.resolve())
    timings["snapshot_cold_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    warm = snapshot_create()
    timings["snapshot_warm_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    with snapshot_export(snapshot=warm, user=user) as fh:
        size = fh.seek(0, 2)
    timings["export_s"] = round(time.perf_counter() - started, 1)
    timings["export_mb"] = round(size / 2**20, 1)
    result = {
        "reviewed": len(images),
        "reuploads_of_test_images": len(test_rows),
        "counts_cold": cold.counts,
        "counts_warm": warm.counts,
        "test_split_unchanged": cold.counts["test"] == warm.counts["test"],
        **timings,
    }
    print(json.dumps(result, indent=1))
    excluded = warm.counts.get("excluded", {}).get("group_in_frozen_test", 0)
    ok = excluded >= len(test_rows) and result["test_split_unchanged"]
    print(f"re-uploads left out of the frozen test split: {excluded}/{len(test_rows)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
