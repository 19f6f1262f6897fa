"""Generated radiograph-like images, reviewed cases and base dataset folders for retraining tests.

Fractured images carry a bright bar on a random texture, so a tiny CNN learns them in seconds; every
image is distinct (seeded noise), so near-duplicate grouping only links what a test links on purpose.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from django.core.files.base import ContentFile
from PIL import Image

from diagnosis.models import Case, Label, Review, XrayImage
from diagnosis.tests import factories


def make_array(seed: int, label: str, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 90, (size, size + 8), dtype=np.uint8)
    if label == Label.FRACTURED:
        r, c = rng.integers(4, size - 16, 2)
        img[r : r + 12, c : c + 4] = 250
    return img


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def reviewed_case(
    *,
    reviewer,
    labels: list[str],
    seed: int,
    patient_ref: str | None = None,
    arrays: list[np.ndarray] | None = None,
    second_reader=None,
    second_labels: list[str] | None = None,
) -> Case:
    """A reviewed case with one image per label and a first read per image (optionally a second)."""
    kwargs = {"status": Case.Status.REVIEWED, "final_label": labels[0]}
    if patient_ref:
        kwargs["patient_ref"] = patient_ref
    case = factories.CaseFactory(**kwargs)
    for position, label in enumerate(labels):
        array = arrays[position] if arrays else make_array(seed * 100 + position, label)
        image = XrayImage.objects.create(
            case=case,
            position=position,
            file=ContentFile(png_bytes(array), name=f"img-{seed}-{position}.png"),
            sha256=f"{seed:032x}{position:032x}",
            width=array.shape[1],
            height=array.shape[0],
            source_format=XrayImage.SourceFormat.PNG,
        )
        Review.objects.create(
            image=image,
            reviewer=reviewer,
            read_number=Review.Read.FIRST,
            decision=Review.Decision.CONFIRM,
            final_label=label,
        )
        if second_reader is not None and second_labels is not None:
            Review.objects.create(
                image=image,
                reviewer=second_reader,
                read_number=Review.Read.SECOND,
                decision=Review.Decision.CORRECT,
                final_label=second_labels[position],
            )
    return case


def make_base_dataset(
    root: Path,
    *,
    per_class: dict[str, int] | None = None,
    seed: int = 7,
    size: int = 48,
    with_boxes: bool = False,
) -> Path:
    """A split/label folder with manifest.csv (id, split, label, body_part), like the FracAtlas set;
    `with_boxes`: and boxes.csv with one expert box per fractured image."""
    per_class = per_class or {"train": 12, "val": 5, "test": 5}
    rows = []
    number = 0
    for split, n in per_class.items():
        for label in Label.values:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                image_id = f"base_IMG{number:07d}"
                # ids ten apart: every image is its own neighbour group
                number += 10
                array = make_array(seed * 10_000 + number, label, size)
                (folder / f"{image_id}.jpg").write_bytes(_jpeg_bytes(array))
                rows.append([image_id, split, label, "hand"])
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "split", "label", "body_part"])
        writer.writerows(rows)
    if with_boxes:
        with (root / "boxes.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "split", "x0", "y0", "x1", "y1", "polygon"])
            for image_id, split, label, _ in rows:
                if label == Label.FRACTURED:
                    writer.writerow([image_id, split, "10.0", "12.5", "20.0", "24.0", ""])
    (root / "LICENSE-DATA.md").write_text("Generated test images (no licence needed).\n")
    return root


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()
