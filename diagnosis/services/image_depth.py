"""Full-depth canonicals for images stored before they were kept, rebuilt from kept originals.

An upload stores the full-depth PNG of a grayscale DICOM or 16-bit PNG image (`XrayImage.depth_file`,
see `diagnosis.imaging.depth`). Images stored earlier have none; where the original was kept
(`KEEP_ORIGINAL_UPLOADS=1`: the de-identified DICOM, the PNG as uploaded) it is decoded again. The
rebuilt full-depth PNG is attached only when the same decoding reproduces the stored 8-bit
canonical pixel for pixel, so the full-depth values belong to exactly the picture the model read and
the readers saw; otherwise the image is left as it is and counted as `mismatch`. Without an
original nothing can be rebuilt (`no_original`); the viewer keeps windowing the 8-bit canonical.

Idempotent: images that have a full-depth file are not selected. Each image is its own transaction;
its file is staged and published on commit, as an upload's (`services.media`).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import numpy as np
from django.db import transaction
from PIL import Image

from diagnosis.exceptions import InvalidUploadError
from diagnosis.imaging import names, validate_upload
from diagnosis.models import XrayImage
from diagnosis.services.media import media_delete, media_publish, media_stage

logger = logging.getLogger(__name__)

# Formats that can carry more than 8 bits (JPEG here is always 8-bit).
_DEEP_FORMATS = (XrayImage.SourceFormat.DICOM, XrayImage.SourceFormat.PNG)


@dataclass
class DepthBackfillReport:
    rebuilt: list[int] = field(default_factory=list)  # image ids
    no_original: int = 0
    no_full_depth: int = 0  # decoded, but 8-bit or colour: nothing to keep
    mismatch: list[int] = field(default_factory=list)  # the 8-bit canonical would differ
    unreadable: list[int] = field(default_factory=list)  # original missing or no longer accepted

    def as_counts(self) -> dict[str, int]:
        return {
            "rebuilt": len(self.rebuilt),
            "no_original": self.no_original,
            "no_full_depth": self.no_full_depth,
            "mismatch": len(self.mismatch),
            "unreadable": len(self.unreadable),
        }


def image_depth_backfill(*, limit: int | None = None) -> DepthBackfillReport:
    """Rebuild missing full-depth PNGs from kept originals (see the module docstring)."""
    report = DepthBackfillReport()
    candidates = (
        XrayImage.objects.filter(depth_file="", source_format__in=_DEEP_FORMATS)
        .exclude(source_format=XrayImage.SourceFormat.PNG, source_bit_depth__lte=8)
        .order_by("pk")
        .values_list("pk", "original_file")
    )
    for pk, original in candidates[:limit] if limit is not None else candidates:
        if not original:
            report.no_original += 1
            continue
        _backfill_one(pk, report)
    counts = report.as_counts()
    level = logging.WARNING if report.mismatch or report.unreadable else logging.INFO
    logger.log(
        level,
        "full-depth backfill",
        extra={
            **counts,
            "mismatch_ids": report.mismatch[:100],
            "unreadable_ids": report.unreadable[:100],
        },
    )
    return report


def _backfill_one(pk: int, report: DepthBackfillReport) -> None:
    image = XrayImage.objects.get(pk=pk)
    try:
        with image.original_file.open("rb") as fh:
            data = fh.read()
        with image.file.open("rb") as fh:
            stored_png = fh.read()
        canonical = validate_upload(data, image.original_file.name, keep_original=False)
    except (OSError, InvalidUploadError):
        report.unreadable.append(pk)
        return
    if canonical.depth_png_bytes is None:
        report.no_full_depth += 1
        return
    if not _same_pixels(canonical.png_bytes, stored_png):
        report.mismatch.append(pk)
        return
    written: list[str] = []
    try:
        with transaction.atomic():
            locked = XrayImage.objects.select_for_update().get(pk=pk)
            if locked.depth_file:  # another run got there first
                return
            final = locked.depth_file.field.generate_filename(locked, names.generated_name("png"))
            written.append(media_stage(final, canonical.depth_png_bytes))
            locked.depth_file.name = final
            locked.depth_params = canonical.depth_params
            locked.save(update_fields=["depth_file", "depth_params"])
            staged = list(written)
            transaction.on_commit(lambda: media_publish(staged))
    except BaseException:
        media_delete(written)
        raise
    report.rebuilt.append(pk)


def _same_pixels(png_a: bytes, png_b: bytes) -> bool:
    """Whether two PNGs hold the same pixels (their bytes may differ with the zlib version)."""
    try:
        with Image.open(io.BytesIO(png_a)) as a, Image.open(io.BytesIO(png_b)) as b:
            return a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))
    except (OSError, ValueError, SyntaxError):
        return False
