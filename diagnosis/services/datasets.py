"""Dataset snapshots: reviewed images (+ an optional base dataset folder) frozen into a manifest.

A snapshot is a JSON manifest of (key, label, split, group, ...) plus content-addressed copies of the
reviewed images (`snapshots/images/<sha256>.png`), so a later edit or deletion of a case does not
change it. The split is group-aware (one patient reference, and near-duplicate pictures, never span
splits) and the test split is frozen: the first snapshot defines it, later ones copy it unchanged
(`frozen_test_of`) and new reviewed images never enter it, so models stay comparable.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import shutil
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from diagnosis import training_bridge
from diagnosis.exceptions import DomainError, UnreadableImageError
from diagnosis.models import DatasetSnapshot, Label
from diagnosis.selectors.training import snapshot_get_latest, snapshot_reviewed_images
from diagnosis.services.audit import audit_record

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_FORMAT = 1
CSV_COLUMNS = ("id", "split", "label", "body_part", "source", "group", "sha256", "path")
# The training data's boxes.csv: one row per fracture box, in pixels of the image file (origin
# top-left, x1/y1 exclusive, one decimal); `polygon` (an outline) is empty for a reader's box.
BOX_COLUMNS = ("id", "split", "x0", "y0", "x1", "y1", "polygon")
EXPERT_ORIGIN = "expert"  # the base dataset's own annotators
SPLIT_SEED = 0
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


class BaseDatasetError(DomainError):
    code, status_code = "invalid_base_dataset", 400


class EmptySnapshotError(DomainError):
    code, status_code = "empty_snapshot", 409


@dataclass
class _Item:
    key: str
    label: str
    source: str  # "review" | "base"
    path: str  # storage name (review) or path relative to the base folder (base)
    body_part: str = ""
    sha256: str = ""
    groups: tuple[str, ...] = ()
    previous_split: str | None = None
    data: bytes | None = field(default=None, repr=False)
    # fracture boxes in pixels of the stored image: {"x0", "y0", "x1", "y1", "origin"}
    boxes: tuple[dict[str, Any], ...] = ()

    def read(self, base_dir: Path | None) -> bytes:
        if self.data is not None:
            return self.data
        if self.source == "base":
            if base_dir is None:
                raise BaseDatasetError("The snapshot refers to a base dataset that is not set.")
            return (base_dir / self.path).read_bytes()
        with default_storage.open(self.path, "rb") as fh:
            return fh.read()


# --- base dataset -----------------------------------------------------------------------------------


def _base_group(image_id: str) -> str:
    """Neighbouring source numbers (runs of ten) are one group, as the base dataset was split."""
    match = re.match(r"^(.*?)(\d+)$", image_id)
    if not match:
        return f"base:{image_id}"
    return f"base-run:{match.group(1)}{int(match.group(2)) // 10}"


def base_dataset_items(base_dir: Path) -> list[_Item]:
    """Read `manifest.csv` (id, split, label[, body_part, group, path]) of a split/label folder."""
    manifest = base_dir / "manifest.csv"
    if not manifest.is_file():
        raise BaseDatasetError("The base dataset folder has no manifest.csv.")
    boxes = _base_boxes(base_dir / "boxes.csv")
    items = []
    with manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            image_id, split, label = row.get("id", ""), row.get("split", ""), row.get("label", "")
            if not image_id or split not in SPLITS or label not in Label.values:
                raise BaseDatasetError(f"Bad manifest row for id {image_id[:40]!r}.")
            rel = row.get("path") or f"{split}/{label}/{image_id}.jpg"
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise BaseDatasetError(f"Unsafe path in manifest for id {image_id[:40]!r}.")
            groups = [_base_group(image_id)]
            if row.get("group"):
                groups.append(f"base-group:{row['group']}")
            items.append(
                _Item(
                    key=f"base:{image_id}",
                    label=label,
                    source="base",
                    path=rel,
                    body_part=row.get("body_part", ""),
                    sha256=row.get("sha256", ""),
                    groups=tuple(groups),
                    previous_split=split,
                    boxes=tuple(boxes.get(image_id, ())),
                )
            )
    if not items:
        raise BaseDatasetError("The base dataset manifest is empty.")
    return items


def _base_boxes(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The base dataset's expert boxes (its boxes.csv, when it has one) per image id."""
    out: dict[str, list[dict[str, Any]]] = {}
    if not path.is_file():
        return out
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                box = {k: round(float(row[k]), 1) for k in ("x0", "y0", "x1", "y1")}
            except (KeyError, TypeError, ValueError) as exc:
                raise BaseDatasetError(
                    f"Bad boxes.csv row for id {str(row.get('id', ''))[:40]!r}."
                ) from exc
            out.setdefault(row.get("id", ""), []).append({**box, "origin": EXPERT_ORIGIN})
    return out


def pixel_boxes(boxes: list[dict[str, Any]], width: int, height: int) -> list[dict[str, Any]]:
    """A reader's boxes (fractions of the image) in pixels of a width x height image, as in
    boxes.csv (one decimal), with their origin."""
    return [
        {
            "x0": round(box["x"] * width, 1),
            "y0": round(box["y"] * height, 1),
            "x1": round(min(box["x"] + box["w"], 1.0) * width, 1),
            "y1": round(min(box["y"] + box["h"], 1.0) * height, 1),
            "origin": box.get("origin") or "reader",
        }
        for box in boxes
    ]


# --- reviewed images ----------------------------------------------------------------------------------


def _reviewed_items() -> list[_Item]:
    items = []
    for labelled in snapshot_reviewed_images():
        image = labelled.image
        with image.file.open("rb") as fh:
            data = fh.read()
        digest = hashlib.sha256(data).hexdigest()
        items.append(
            _Item(
                key=f"img:{image.pk}",
                label=labelled.label,
                source="review",
                path=f"snapshots/images/{digest}.png",
                body_part=image.case.body_part,
                sha256=digest,
                groups=(f"patient:{image.case.patient_ref.lower()}",),
                data=data,
                # the stored bytes are the canonical image, the frame of the reader's boxes
                boxes=tuple(pixel_boxes(labelled.boxes, image.width, image.height)),
            )
        )
    return items


def _store_image(item: _Item) -> None:
    """Content-addressed copy: identical bytes are stored once across snapshots."""
    if item.data is not None and not default_storage.exists(item.path):
        default_storage.save(item.path, ContentFile(item.data))


# --- evidence for a run -----------------------------------------------------------------------------------


def snapshot_evidence(*, base_dir: str | Path | None = None) -> dict[str, int]:
    """How many labelled images per class a new snapshot would hold (reviewed images, the base
    dataset, and what the latest snapshot carries over), without reading an image or creating a
    snapshot: the check a retraining run must pass before it starts."""
    previous = snapshot_get_latest()
    if base_dir is None:
        base_dir = (previous.base_dataset if previous else "") or settings.TRAINING_BASE_DATASET_DIR
    labels: dict[str, str] = {
        f"img:{labelled.image.pk}": labelled.label for labelled in snapshot_reviewed_images()
    }
    if base_dir:
        labels.update((item.key, item.label) for item in base_dataset_items(Path(base_dir)))
    if previous is not None:
        for row in snapshot_read_manifest(snapshot=previous)["items"]:
            labels.setdefault(row["key"], row["label"])
    counts = dict.fromkeys(Label.values, 0)
    for label in labels.values():
        counts[label] += 1
    return counts


def snapshot_reusable(*, snapshot: DatasetSnapshot, base_dir: str | Path | None = None) -> bool:
    """True when a new snapshot would hold nothing that `snapshot` does not: no image reviewed
    since, the same base dataset. A run then reuses it instead of freezing an identical one (a
    retried run no longer leaves a new snapshot behind per try)."""
    if base_dir is not None and str(base_dir or "") != snapshot.base_dataset:
        return False
    manifest = snapshot_read_manifest(snapshot=snapshot)
    known = {row["key"] for row in manifest["items"]} | {
        row["key"] for row in manifest.get("excluded", [])
    }
    return all(f"img:{labelled.image.pk}" in known for labelled in snapshot_reviewed_images())


# --- manifests --------------------------------------------------------------------------------------------


def snapshot_read_manifest(*, snapshot: DatasetSnapshot) -> dict[str, Any]:
    with snapshot.manifest.open("rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != snapshot.manifest_sha256:
        raise DomainError("The snapshot manifest does not match its checksum.")
    return json.loads(data)


def _frozen_root(previous: DatasetSnapshot | None) -> DatasetSnapshot | None:
    if previous is None:
        return None
    return previous.frozen_test_of or previous


def _counts(items: list[dict[str, Any]], excluded: dict[str, str]) -> dict[str, Any]:
    counts: dict[str, Any] = {s: dict.fromkeys(Label.values, 0) for s in SPLITS}
    for item in items:
        counts[item["split"]][item["label"]] += 1
    for split in SPLITS:
        counts[split]["total"] = sum(counts[split][lab] for lab in Label.values)
    counts["total"] = len(items)
    counts["sources"] = dict(Counter(item["source"] for item in items))
    counts["excluded"] = dict(Counter(excluded.values()))
    boxes = [(item, box) for item in items for box in item.get("boxes", [])]
    counts["boxes"] = {
        "total": len(boxes),
        "images": sum(1 for item in items if item.get("boxes")),
        "by_split": {s: sum(1 for item, _ in boxes if item["split"] == s) for s in SPLITS},
        "by_source": dict(Counter(item["source"] for item, _ in boxes)),
        "by_origin": dict(Counter(box.get("origin", "") for _, box in boxes)),
        "fractured_without_boxes": sum(
            1 for item in items if item["label"] == Label.FRACTURED and not item.get("boxes")
        ),
    }
    return counts


def _merge_previous(
    current: list[_Item], previous_manifest: dict[str, Any] | None
) -> tuple[list[_Item], int]:
    """Carry the previous snapshot's splits over; its test items stay even if gone from the source."""
    if previous_manifest is None:
        return current, 0
    prev = {row["key"]: row for row in previous_manifest["items"]}
    by_key = {item.key: item for item in current}
    for key, row in prev.items():
        item = by_key.get(key)
        if item is not None:
            item.previous_split = row["split"]
            if item.source == "review":
                item.groups = (*item.groups, *(g for g in row.get("groups", []) if g))
        elif row["split"] == "test":
            by_key[key] = _Item(
                key=key,
                label=row["label"],
                source=row["source"],
                path=row["path"],
                body_part=row.get("body_part", ""),
                sha256=row.get("sha256", ""),
                groups=tuple(row.get("groups", [])),
                previous_split="test",
                boxes=tuple(row.get("boxes", [])),
            )
    carried = sum(1 for key in by_key if key in prev)
    return list(by_key.values()), carried


def snapshot_create(
    *,
    user: AbstractBaseUser | None = None,
    base_dir: str | Path | None = None,
    request: HttpRequest | None = None,
) -> DatasetSnapshot:
    """Freeze reviewed images (+ the base dataset) into a new snapshot (see the module docstring).

    `base_dir` defaults to the previous snapshot's base dataset, else TRAINING_BASE_DATASET_DIR; pass
    "" for none. Slow part (decoding and hashing images) runs before the short write transaction.
    """
    previous = snapshot_get_latest()
    root = _frozen_root(previous)
    if base_dir is None:
        base_dir = (previous.base_dataset if previous else "") or settings.TRAINING_BASE_DATASET_DIR
    base_path = Path(base_dir) if base_dir else None
    previous_manifest = snapshot_read_manifest(snapshot=previous) if previous else None

    reviewed = _reviewed_items()
    base_items = base_dataset_items(base_path) if base_path else []
    if root is not None:
        # a later snapshot never grows the frozen test split, whatever the base folder says
        frozen_keys = {r["key"] for r in previous_manifest["items"] if r["split"] == "test"}  # type: ignore[index]
        for item in base_items:
            if item.previous_split == "test" and item.key not in frozen_keys:
                item.previous_split = None
    items, carried = _merge_previous(reviewed + base_items, previous_manifest)
    if not items:
        raise EmptySnapshotError("There are no reviewed images (and no base dataset) to snapshot.")
    excluded: dict[str, str] = {}
    if root is not None:
        for item in base_items:
            if item.previous_split is None:
                excluded[item.key] = "not_in_frozen_test"
        items = [i for i in items if i.key not in excluded]

    links = _near_duplicate_links(items, base_path)
    has_frozen_test = root is not None or any(i.previous_split == "test" for i in items)
    open_splits = ("train", "val") if has_frozen_test else SPLITS
    result = training_bridge.assign_splits(
        [
            training_bridge.SplitInput(i.key, i.label, i.groups, i.previous_split)
            for i in sorted(items, key=lambda i: i.key)
        ],
        open_splits=open_splits,
        links=links,
        seed=SPLIT_SEED,
    )
    excluded.update(result.excluded)
    rows = []
    for item in sorted(items, key=lambda i: i.key):
        if item.key in excluded:
            continue
        rows.append(
            {
                "key": item.key,
                "path": item.path,
                "label": item.label,
                "split": result.splits[item.key],
                "group": result.group_of[item.key],
                "groups": list(item.groups),
                "body_part": item.body_part,
                "source": item.source,
                "sha256": item.sha256,
                "boxes": list(item.boxes),
            }
        )
    if not any(r["split"] == "train" for r in rows):
        raise EmptySnapshotError("The snapshot would have no training images.")
    for item in items:
        if item.key not in excluded and item.source == "review":
            _store_image(item)

    now = timezone.now()
    manifest = {
        "format": MANIFEST_FORMAT,
        "created_at": now.isoformat(),
        "base_dataset": str(base_path) if base_path else "",
        "frozen_test_of": root.version if root else "",
        "split_seed": SPLIT_SEED,
        "items": rows,
        "excluded": [{"key": k, "reason": v} for k, v in sorted(excluded.items())],
    }
    payload = json.dumps(manifest, indent=1, sort_keys=True).encode()
    digest = hashlib.sha256(payload).hexdigest()
    version = f"ds-{now:%Y%m%d-%H%M%S}-{digest[:6]}"
    counts = _counts(rows, excluded)
    counts["carried_over"] = carried
    with transaction.atomic():
        snapshot = DatasetSnapshot(
            version=version,
            created_by=user,
            base_dataset=manifest["base_dataset"],
            manifest_sha256=digest,
            counts=counts,
            frozen_test_of=root,
            reviews_included=sum(1 for r in rows if r["source"] == "review"),
        )
        snapshot.manifest.save(f"{version}.json", ContentFile(payload), save=False)
        snapshot.full_clean()
        snapshot.save()
        audit_record(
            action="snapshot.create",
            actor=user,
            request=request,
            obj=snapshot,
            object_id=str(snapshot.pk),
            items=len(rows),
            reviewed=snapshot.reviews_included,
            excluded=len(excluded),
        )
    logger.info(
        "snapshot created",
        extra={"snapshot_id": snapshot.pk, "items": len(rows), "excluded": len(excluded)},
    )
    return snapshot


def _near_duplicate_links(items: list[_Item], base_path: Path | None) -> list[tuple[str, str]]:
    """Links between reviewed images and any other image of the snapshot that show the same picture."""
    queries = [i for i in items if i.source == "review"]
    if not queries:
        return []
    references = [i for i in items if i.source != "review" or i.data is None]
    query_prints, kept_queries = [], []
    for item in queries:
        try:
            query_prints.append(
                training_bridge.image_fingerprint(item.read(base_path), dihedral=True)
            )
            kept_queries.append(item)
        except (UnreadableImageError, OSError):
            logger.warning("snapshot image unreadable", extra={"snapshot_item": item.key})
    ref_prints, kept_refs = [], []
    on_disk = [i for i in references if i.source == "base" and base_path is not None]
    on_disk_keys = {i.key for i in on_disk}
    cached = training_bridge.file_fingerprints(
        [Path(base_path or "") / i.path for i in on_disk],
        cache_dir=settings.TRAINING_WORK_DIR / "fingerprints",
    )
    for item, fingerprint in zip(on_disk, cached, strict=True):
        if fingerprint is not None:
            ref_prints.append(fingerprint)
            kept_refs.append(item)
    for item in references:
        if item.key in on_disk_keys:
            continue
        try:
            ref_prints.append(training_bridge.image_fingerprint(item.read(base_path)))
            kept_refs.append(item)
        except (UnreadableImageError, OSError):
            logger.warning("snapshot image unreadable", extra={"snapshot_item": item.key})
    links = [
        (kept_queries[q].key, kept_refs[r].key)
        for q, r in training_bridge.near_duplicate_pairs(query_prints, ref_prints)
    ]
    # as references only the identity variant counts, so the reviewed prints serve both roles
    links += [
        (kept_queries[q].key, kept_queries[r].key)
        for q, r in training_bridge.near_duplicate_pairs(query_prints, query_prints, same_set=True)
    ]
    return links


# --- materialising and exporting ---------------------------------------------------------------------


def _file_name(row: dict[str, Any]) -> str:
    ext = Path(row["path"]).suffix.lower() or ".png"
    return _SAFE_ID.sub("_", row["key"].replace(":", "_")) + ext


def _row_bytes(row: dict[str, Any], base_path: Path | None) -> bytes:
    if row["source"] == "base":
        if base_path is None:
            raise BaseDatasetError("The snapshot's base dataset folder is not set.")
        return (base_path / row["path"]).read_bytes()
    with default_storage.open(row["path"], "rb") as fh:
        return fh.read()


def _manifest_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                Path(_file_name(row)).stem,
                row["split"],
                row["label"],
                row["body_part"],
                row["source"],
                row["group"],
                row["sha256"],
                f"{row['split']}/{row['label']}/{_file_name(row)}",
            ]
        )
    return buf.getvalue()


def _boxes_csv(rows: list[dict[str, Any]]) -> str:
    """boxes.csv in the training data's format, ids as in manifest.csv, pixels of each file."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(BOX_COLUMNS)
    for row in rows:
        for box in row.get("boxes", []):
            writer.writerow(
                [
                    Path(_file_name(row)).stem,
                    row["split"],
                    f"{box['x0']:.1f}",
                    f"{box['y0']:.1f}",
                    f"{box['x1']:.1f}",
                    f"{box['y1']:.1f}",
                    "",
                ]
            )
    return buf.getvalue()


def snapshot_materialize(*, snapshot: DatasetSnapshot, dest: Path) -> Path:
    """Write the snapshot as a `split/label/<id>.<ext>` folder with manifest.csv and boxes.csv
    (the layout `ml.train` and `ml.train_locate` read). Base images are hard-linked where possible, else copied."""
    manifest = snapshot_read_manifest(snapshot=snapshot)
    base_path = Path(snapshot.base_dataset) if snapshot.base_dataset else None
    dest.mkdir(parents=True, exist_ok=True)
    for row in manifest["items"]:
        target = dest / row["split"] / row["label"] / _file_name(row)
        target.parent.mkdir(parents=True, exist_ok=True)
        if row["source"] == "base" and base_path is not None:
            try:
                target.hardlink_to(base_path / row["path"])
                continue
            except OSError:
                shutil.copyfile(base_path / row["path"], target)
                continue
        target.write_bytes(_row_bytes(row, base_path))
    (dest / "manifest.csv").write_text(_manifest_csv(manifest["items"]))
    (dest / "boxes.csv").write_text(_boxes_csv(manifest["items"]))
    return dest


def _readme(snapshot: DatasetSnapshot, manifest: dict[str, Any]) -> str:
    counts = snapshot.counts
    lines = [
        f"# Fracture Portal dataset snapshot {snapshot.version}",
        "",
        f"Created {snapshot.created_at:%Y-%m-%d %H:%M} UTC. Images are in `images/<split>/<label>/`;",
        "`manifest.csv` lists one row per image: id, split, label, body_part, source (`review`: a",
        "radiograph uploaded to the portal and labelled by its radiologists; `base`: the base dataset),",
        "group (images of one group never span splits) and sha256.",
        "",
        "| split | fractured | not_fractured | total |",
        "|---|---:|---:|---:|",
    ]
    for split in SPLITS:
        c = counts.get(split, {})
        lines.append(
            f"| {split} | {c.get('fractured', 0)} | {c.get('not_fractured', 0)} | {c.get('total', 0)} |"
        )
    boxes = counts.get("boxes") or {}
    by_split = boxes.get("by_split", {})
    by_source = boxes.get("by_source", {})
    by_origin = boxes.get("by_origin", {})
    lines += [
        "",
        "## Fracture boxes",
        "",
        "`boxes.csv` has one row per fracture box, in the format of the training data's boxes.csv:",
        "`id` and `split` as in `manifest.csv`, `x0`, `y0`, `x1`, `y1` in **pixels of the image file",
        "in this archive** (origin top-left, x to the right, y down, `x1`/`y1` exclusive, one",
        "decimal), `polygon` (the annotators' outline) empty. Boxes of `review` images are the agreed",
        "final boxes of their radiologists (the deciding read's); boxes of `base` images are the base",
        "dataset's expert boxes.",
        "",
        f"{boxes.get('total', 0)} boxes on {boxes.get('images', 0)} images (train "
        f"{by_split.get('train', 0)}, val {by_split.get('val', 0)}, test {by_split.get('test', 0)}); "
        f"from reviews {by_source.get('review', 0)}, from the base dataset "
        f"{by_source.get('base', 0)}.",
        "Origin of the reviewed boxes: drawn by the reader "
        f"{by_origin.get('reader', 0)}, model mark accepted as is "
        f"{by_origin.get('model_accepted', 0)}, model mark moved or resized "
        f"{by_origin.get('model_moved', 0)}.",
        f"Fractured images without a box: {boxes.get('fractured_without_boxes', 0)}.",
    ]
    root = manifest.get("frozen_test_of") or snapshot.version
    lines += [
        "",
        f"The test split is frozen: it is the test split of snapshot {root}, reused unchanged so that",
        "models trained on different snapshots are compared on the same images.",
        "",
        "## Licence and attribution",
        "",
    ]
    if counts.get("sources", {}).get("base"):
        lines += [
            "Images with source `base` are derived from **FracAtlas** (Abedeen et al., *FracAtlas: A",
            "Dataset for Fracture Classification, Localization and Segmentation of Musculoskeletal",
            "Radiographs*, Scientific Data 10, 521 (2023), https://doi.org/10.1038/s41597-023-02432-4),",
            "licensed **CC BY 4.0** (https://creativecommons.org/licenses/by/4.0/). They were converted",
            "to 8-bit grayscale, resized and re-encoded; see LICENSE-DATA.md where included. The",
            "dataset authors do not endorse this derived version; cite the paper if you use them.",
            "",
        ]
    if counts.get("sources", {}).get("review"):
        lines += [
            "Images with source `review` are de-identified radiographs uploaded to this portal, with",
            "labels confirmed or corrected by its radiologists. They are patient data: share them only",
            "as your institution's data-protection policy allows. They carry no open licence.",
            "",
        ]
    return "\n".join(lines)


def snapshot_export(
    *, snapshot: DatasetSnapshot, user: AbstractBaseUser, request: HttpRequest | None = None
) -> IO[bytes]:
    """A zip (images, manifest.csv, boxes.csv, README.md, LICENSE-DATA.md when the base has one) in an
    anonymous temporary file, positioned at the start; closing it deletes it. Audited."""
    manifest = snapshot_read_manifest(snapshot=snapshot)
    base_path = Path(snapshot.base_dataset) if snapshot.base_dataset else None
    settings.TRAINING_WORK_DIR.mkdir(parents=True, exist_ok=True)
    fh = tempfile.TemporaryFile(dir=settings.TRAINING_WORK_DIR)  # noqa: SIM115 (returned open)
    try:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as archive:
            for row in manifest["items"]:
                name = f"images/{row['split']}/{row['label']}/{_file_name(row)}"
                archive.writestr(name, _row_bytes(row, base_path))
            archive.writestr("manifest.csv", _manifest_csv(manifest["items"]))
            archive.writestr("boxes.csv", _boxes_csv(manifest["items"]))
            archive.writestr("README.md", _readme(snapshot, manifest))
            if base_path is not None and (base_path / "LICENSE-DATA.md").is_file():
                archive.write(base_path / "LICENSE-DATA.md", "LICENSE-DATA.md")
    except BaseException:
        fh.close()
        raise
    fh.seek(0)
    audit_record(
        action="snapshot.export",
        actor=user,
        request=request,
        obj=snapshot,
        object_id=str(snapshot.pk),
        items=len(manifest["items"]),
    )
    return fh
