"""Media files and the rows that point at them: staging, publishing on commit, reconciling.

An upload writes its files under `staging/` while its transaction is open, and moves them to their
final names (the names the rows hold) only after the commit. A process killed before the commit
(SIGKILL, OOM killer, power loss) leaves files in `staging/` only, never a radiograph under
`images/` that no case points to, which neither retention nor case deletion could ever find.

`media_reconcile` (command `manage.py media_reconcile`, periodic task `media_reconcile`) squares
storage with the database:

- a staged file whose row exists is published (the process died between commit and publish);
  one whose row does not exist is an orphan once older than the grace period;
- a file under `images/`, `originals/`, `depth/` or `heatmaps/` that no row points to is an orphan once older
  than the grace period (in-flight work is younger);
- orphans are removed with `fix`, otherwise only counted;
- a row whose file is missing is flagged (counted, ids logged): it cannot be repaired here.

Other areas (`snapshots/`: content-addressed dataset copies referenced from manifests) are left
alone.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from diagnosis.models import Prediction, XrayImage

logger = logging.getLogger(__name__)

STAGING = "staging/"
_IMAGE_AREAS = ("images/", "originals/", "depth/")
_IMAGE_FILE_FIELDS = ("file", "original_file", "depth_file")
_HEATMAPS = "heatmaps/"
_HEATMAP_ID = re.compile(r"^heatmaps/prediction-(\d+)(?:-overlay)?\.png$")


# --- staging and publishing -----------------------------------------------------------------------


def media_stage(final_name: str, data: bytes) -> str:
    """Write `data` where `final_name` will be published from; returns the staged name."""
    return default_storage.save(f"{STAGING}{final_name}", ContentFile(data))


def media_final_name(staged_name: str) -> str:
    return staged_name.removeprefix(STAGING)


def media_publish(staged_names: Sequence[str]) -> int:
    """Move staged files to their final names (after the commit that made their rows); returns how
    many moved. A failure is logged, never raised: the row is committed, and the next
    `media_reconcile` publishes what is left in staging."""
    moved = 0
    for staged in staged_names:
        try:
            _move(staged, media_final_name(staged))
            moved += 1
        except OSError:
            logger.exception("staged file not published", extra={"storage_name": staged})
    return moved


def _move(source: str, target: str) -> None:
    try:
        source_path, target_path = default_storage.path(source), default_storage.path(target)
    except NotImplementedError:  # object storage: copy, then delete the staged copy
        with default_storage.open(source, "rb") as fh:
            saved = default_storage.save(target, fh)
        if saved != target:
            default_storage.delete(saved)
            raise OSError(f"{target} exists already") from None
        default_storage.delete(source)
        return
    _makedirs(os.path.dirname(target_path))
    os.replace(source_path, target_path)  # atomic on one file system; keeps the file's mode


def _makedirs(directory: str) -> None:
    """As FileSystemStorage creates folders: FILE_UPLOAD_DIRECTORY_PERMISSIONS (0o700)."""
    mode = settings.FILE_UPLOAD_DIRECTORY_PERMISSIONS
    if mode is None:
        os.makedirs(directory, exist_ok=True)
        return
    old_umask = os.umask(0o777 & ~mode)
    try:
        os.makedirs(directory, mode, exist_ok=True)
    finally:
        os.umask(old_umask)


# --- reconciling ----------------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    scanned: int = 0
    published: int = 0  # staged files of committed rows, moved to their names
    orphans: dict[str, int] = field(default_factory=dict)  # area -> files without rows
    removed: int = 0
    too_recent: int = 0  # unreferenced but younger than the grace period: maybe in flight
    images_missing: list[int] = field(default_factory=list)  # XrayImage ids
    heatmaps_missing: list[int] = field(default_factory=list)  # finished Prediction ids

    def as_counts(self) -> dict[str, int]:
        return {
            "scanned": self.scanned,
            "published": self.published,
            "orphans": sum(self.orphans.values()),
            **{f"orphans_{area.rstrip('/')}": n for area, n in sorted(self.orphans.items())},
            "removed": self.removed,
            "too_recent": self.too_recent,
            "rows_without_files": len(self.images_missing) + len(self.heatmaps_missing),
        }


def _walk(directory: str) -> Iterator[str]:
    try:
        folders, files = default_storage.listdir(directory)
    except FileNotFoundError:
        return
    for name in files:
        yield f"{directory}{name}"
    for folder in folders:
        yield from _walk(f"{directory}{folder}/")


def _older_than(name: str, cutoff: datetime) -> bool:
    try:
        return default_storage.get_modified_time(name) < cutoff
    except (FileNotFoundError, NotImplementedError):
        return True


def media_reconcile(
    *, fix: bool = False, grace_seconds: int | None = None, now: datetime | None = None
) -> ReconcileReport:
    """Square media storage with the rows (see the module docstring). Idempotent."""
    grace = settings.MEDIA_RECONCILE_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = (now or timezone.now()) - timedelta(seconds=grace)
    report = ReconcileReport()
    referenced = _image_names()
    present: set[str] = set()

    for staged in _walk(STAGING):
        report.scanned += 1
        final = media_final_name(staged)
        if final in referenced:
            if default_storage.exists(final):
                _orphan(report, "staging/", staged, cutoff=cutoff, fix=fix)  # a stray copy
            elif not fix or media_publish([staged]):
                report.published += 1
                present.add(final)
        else:
            _orphan(report, "staging/", staged, cutoff=cutoff, fix=fix)

    for area in _IMAGE_AREAS:
        for name in _walk(area):
            report.scanned += 1
            present.add(name)
            if name not in referenced:
                _orphan(report, area, name, cutoff=cutoff, fix=fix)

    prediction_ids = set(Prediction.objects.values_list("pk", flat=True))
    for name in _walk(_HEATMAPS):
        report.scanned += 1
        present.add(name)
        match = _HEATMAP_ID.match(name)
        if match is None or int(match.group(1)) not in prediction_ids:
            _orphan(report, _HEATMAPS, name, cutoff=cutoff, fix=fix)

    for pk, *file_names in XrayImage.objects.values_list("pk", *_IMAGE_FILE_FIELDS):
        if any(name and name not in present for name in file_names):
            report.images_missing.append(pk)
    for pk, heatmap in (
        Prediction.objects.filter(status=Prediction.Status.DONE)
        .exclude(heatmap="")
        .values_list("pk", "heatmap")
    ):
        if heatmap not in present:
            report.heatmaps_missing.append(pk)

    counts = report.as_counts()
    if report.images_missing or report.heatmaps_missing:
        logger.error(
            "media reconcile: rows without files",
            extra={
                "image_ids": report.images_missing[:100],
                "prediction_ids": report.heatmaps_missing[:100],
            },
        )
    level = logging.WARNING if counts["orphans"] or counts["published"] else logging.INFO
    logger.log(level, "media reconciled", extra={**counts, "fix": fix})
    return report


def _image_names() -> set[str]:
    names: set[str] = set()
    for file_names in XrayImage.objects.values_list(*_IMAGE_FILE_FIELDS):
        names.update(n for n in file_names if n)
    return names


def _orphan(report: ReconcileReport, area: str, name: str, *, cutoff: datetime, fix: bool) -> None:
    if not _older_than(name, cutoff):
        report.too_recent += 1
        return
    report.orphans[area] = report.orphans.get(area, 0) + 1
    if fix:
        try:
            default_storage.delete(name)
            report.removed += 1
        except OSError:
            logger.warning("orphan file not removed", extra={"storage_name": name})


def media_delete(names: Iterable[str]) -> None:
    """Delete files (an upload's staged files when its transaction failed); errors are logged."""
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("could not delete orphan upload", extra={"storage_name": name})
