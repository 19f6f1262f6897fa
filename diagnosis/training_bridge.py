"""Retraining's bridge into ml/: fingerprints and splits for snapshots, training, evaluation.

Like `diagnosis.inference` (serving), this module imports ml lazily and returns plain values, so the
web process never loads TensorFlow; ml's ValueErrors become domain errors here. It sits in the same
layer as `diagnosis.inference`: services call it, it imports nothing above the models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diagnosis.exceptions import DomainError, ModelArtifactError, UnreadableImageError

if TYPE_CHECKING:
    from ml.evaluate import CandidateEvaluation
    from ml.snapshot import ImageFingerprint, SplitResult


def image_fingerprint(data: bytes, *, dihedral: bool = False) -> ImageFingerprint:
    """Perceptual hashes + thumbnails of an encoded image (identity first; `dihedral`: 8 variants)."""
    from ml import preprocess, snapshot

    try:
        return snapshot.fingerprint(preprocess.decode_image(data), dihedral=dihedral)
    except preprocess.InvalidImageError as exc:
        raise UnreadableImageError(f"The image could not be decoded: {exc}") from exc


def file_fingerprints(
    paths: Sequence[Path], *, cache_dir: Path | None = None
) -> list[ImageFingerprint | None]:
    """Identity fingerprints of image files (None where unreadable), in order.

    With `cache_dir`, the whole list is cached in one .npz keyed by every file's path, size and
    modification time, so a base dataset folder is decoded once, not at every snapshot.
    """
    import hashlib

    import numpy as np

    from ml import preprocess, snapshot

    cache_file = None
    if cache_dir is not None:
        digest = hashlib.sha256()
        for path in paths:
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        cache_file = cache_dir / f"fingerprints-{digest.hexdigest()[:24]}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as cached:  # each key access reads the array: once each
                ok, hashes = cached["ok"], cached["hashes"]
                thumbs = cached["thumbs"].astype(np.float32)
            return [
                snapshot.ImageFingerprint(hashes=hashes[i : i + 1], thumbs=thumbs[i : i + 1])
                if ok[i]
                else None
                for i in range(len(paths))
            ]
    prints: list[ImageFingerprint | None] = []
    for path in paths:
        try:
            prints.append(snapshot.fingerprint(preprocess.read_image(path)))
        except (preprocess.InvalidImageError, OSError):
            prints.append(None)
    if cache_file is not None and prints:
        size = snapshot.THUMB_SIZE
        blank = np.zeros((size, size), np.float16)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            ok=np.array([p is not None for p in prints]),
            hashes=np.array([p.hashes[0] if p else 0 for p in prints], dtype=np.uint64),
            thumbs=np.stack([p.thumbs[0].astype(np.float16) if p else blank for p in prints]),
        )
        tmp.replace(cache_file)
    return prints


def near_duplicate_pairs(
    queries: Sequence[ImageFingerprint],
    references: Sequence[ImageFingerprint],
    *,
    same_set: bool = False,
) -> list[tuple[int, int]]:
    from ml import snapshot

    return snapshot.near_duplicate_pairs(queries, references, same_set=same_set)


@dataclass(frozen=True)
class SplitInput:
    key: str
    label: str
    groups: tuple[str, ...]
    previous_split: str | None


def assign_splits(
    items: Sequence[SplitInput],
    *,
    open_splits: Sequence[str],
    links: Iterable[tuple[str, str]],
    seed: int,
) -> SplitResult:
    from ml import snapshot

    return snapshot.assign_splits(
        [snapshot.SplitItem(i.key, i.label, i.groups, i.previous_split) for i in items],
        open_splits=open_splits,
        links=links,
        seed=seed,
    )


# --- training -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainOutcome:
    artifact_dir: Path | None  # None when cancelled (nothing was written)
    version: str
    cancelled: bool
    best_val_auroc: float
    epochs_run: int
    seconds: float


def train_model(
    *,
    config: dict[str, Any],
    data_dir: Path,
    out_dir: Path,
    work_dir: Path,
    init_from: Path | None,
    progress: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
) -> TrainOutcome:
    """Train (or fine-tune `init_from`) with ml.train on the snapshot folder. The artifact is saved
    by `ml.registry.save` (temp folder + atomic rename); checkpoints stay under `work_dir`.

    A fine-tune starts from the active model's own training configuration (learning rates, batch
    size, balancing, which blocks are unfrozen); the keys in `config` override it."""
    from ml import registry
    from ml import train as ml_train
    from ml.config import TrainConfig

    settings_: dict[str, Any] = {}
    if init_from is not None:
        inherited = registry.read_card(init_from).training.get("config") or {}
        settings_.update(
            {k: v for k, v in inherited.items() if k not in {"version", "max_train_images"}}
        )
    settings_.update(config)
    result = ml_train.train(
        TrainConfig.from_dict(settings_),
        data_dir,
        out_dir,
        init_from=init_from,
        # Progress reaches the service as plain JSON values, floats rounded to 5 digits.
        progress=lambda info: progress(registry.json_safe(info, digits=5)),
        should_stop=should_stop,
        work_dir=work_dir,
        show_progress=False,
    )
    return TrainOutcome(
        artifact_dir=result.artifact_dir,
        version=result.card.version if result.card else "",
        cancelled=result.cancelled,
        best_val_auroc=float(result.best_val_auroc),
        epochs_run=len(result.history),
        seconds=float(result.seconds),
    )


# Keys of a run's configuration that the locator's recipe (ml.train_locate.LocateConfig) takes.
LOCATE_KEYS = ("size", "epochs", "batch_size", "lr", "seed", "max_train_images", "variants")


class _LocateCancelledError(Exception):
    """Raised from the locator's log callback when the run is cancelled (between epochs)."""


def train_locator(
    *,
    config: dict[str, Any],
    data_dir: Path,
    out_dir: Path,
    recipe_from: Path | None,
    progress: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
    init_from: Path | None = None,
) -> TrainOutcome:
    """Train a localising model (ml.train_locate: ImageNet backbone, centre heat-map head) on the
    snapshot folder, supervised by its labels and boxes.csv. The recipe is the one `recipe_from`
    (the active locator) was trained with, where it has one; the run's keys in LOCATE_KEYS (and
    `version`) override it. With `init_from` (a locator artifact) the run starts from its weights
    instead of ImageNet's. Cancellation is checked between epochs; a cancelled run leaves nothing
    in `out_dir`."""
    import dataclasses
    import json
    import shutil
    import time

    from ml import registry
    from ml import train_locate as ml_locate

    fields = {f.name for f in dataclasses.fields(ml_locate.LocateConfig)}
    settings_: dict[str, Any] = {}
    if recipe_from is not None:
        inherited = registry.read_card(recipe_from).training.get("config") or {}
        settings_.update(
            {
                k: v
                for k, v in inherited.items()
                if k in fields and k not in {"version", "max_train_images", "init_from"}
            }
        )
    settings_.update({k: v for k, v in config.items() if k in LOCATE_KEYS and k in fields})
    settings_["version"] = str(config.get("version") or "")
    settings_["init_from"] = str(init_from) if init_from is not None else ""
    locate_config = ml_locate.LocateConfig(**settings_)
    started = time.monotonic()
    best = {"val_auroc": 0.0, "epochs": 0}
    last: dict[str, Any] = {}  # the latest epoch's row, kept beside later stage messages

    def log(message: str) -> None:
        if should_stop():
            raise _LocateCancelledError
        try:
            row = json.loads(message)
        except ValueError:
            # stage lines ("loaded ...", "cached variant ...", "saved <folder> ..."): no paths
            stage = "saved the candidate" if message.startswith("saved ") else message[:200]
            progress({**last, "stage": stage})
            return
        if not isinstance(row, dict) or "epoch" not in row:
            return
        auroc = float(row.get("val_auroc_sum", 0.0))
        best["epochs"] = int(row["epoch"])
        best["val_auroc"] = max(best["val_auroc"], auroc)
        last.clear()
        last.update(
            registry.json_safe(
                {
                    "epoch": int(row["epoch"]),
                    "epochs": locate_config.epochs,
                    "val_auroc": auroc,
                    "val_top1": float(row.get("val_top1", 0.0)),
                    "val_froc_at_1fp": float(row.get("val_fp1", 0.0)),
                    "seconds": float(row.get("seconds", 0.0)),
                },
                digits=5,
            )
        )
        progress(dict(last))

    try:
        result = ml_locate.train(data_dir, out_dir, locate_config, log=log)
    except _LocateCancelledError:
        shutil.rmtree(out_dir, ignore_errors=True)
        return TrainOutcome(
            artifact_dir=None,
            version=locate_config.version,
            cancelled=True,
            best_val_auroc=best["val_auroc"],
            epochs_run=best["epochs"],
            seconds=time.monotonic() - started,
        )
    except ValueError as exc:  # the snapshot folder cannot train a locator (e.g. an empty split)
        raise DomainError(f"The localising model could not be trained: {exc}") from exc
    history = result["history"]
    best_epoch = int(result["card"]["training"]["best_epoch"])
    return TrainOutcome(
        artifact_dir=out_dir,
        version=result["card"]["version"],
        cancelled=False,
        best_val_auroc=float(history[best_epoch - 1].get("val_auroc_sum", 0.0)),
        epochs_run=len(history),
        seconds=time.monotonic() - started,
    )


# --- evaluation on the frozen test split ----------------------------------------------------------------


def evaluate_candidate(
    *,
    candidate_dir: Path,
    active_dir: Path | None,
    data_dir: Path,
    split: str,
    plots_dir: Path,
    n_boot: int,
) -> CandidateEvaluation:
    """Both models on the same images of `split`, each run through `ml.serving.Predictor` (the
    graph that serves): see `ml.evaluate.compare_candidate`."""
    from ml import evaluate, registry

    try:
        return evaluate.compare_candidate(
            candidate_dir=candidate_dir,
            active_dir=active_dir,
            data_dir=data_dir,
            split=split,
            plots_dir=plots_dir,
            n_boot=n_boot,
        )
    except evaluate.EmptySplitError as exc:
        raise UnreadableImageError(f"The snapshot has no {split} images to evaluate on.") from exc
    except (registry.InvalidArtifactError, registry.ChecksumMismatchError) as exc:
        raise ModelArtifactError(str(exc)) from exc
