"""Model artifacts: a folder with `model.keras`, `card.json` and optional `plots/*.png`.

`read_card` needs no TensorFlow; `load` verifies the recorded sha256 before deserialising the model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import ImageSpec

if TYPE_CHECKING:
    import keras

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
PLOTS_DIR = "plots"


class ChecksumMismatchError(ValueError):
    """The model file does not match the sha256 recorded in its card."""


class InvalidArtifactError(ValueError):
    """The folder is not a model artifact (missing or malformed card/model)."""


@dataclass(frozen=True)
class ModelCard:
    version: str
    architecture: str
    spec: ImageSpec = field(default_factory=ImageSpec)
    gradcam_layer: str = "last_conv"
    thresholds: dict[str, float] = field(
        default_factory=lambda: {"balanced": 0.5, "high_sensitivity": 0.5}
    )
    default_operating_point: str = "balanced"
    temperature: float = 1.0
    metrics: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    created_at: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    # A model that localises fractures (ml.localise): its LOC output, the fusion of classifier logit
    # and heat-map peak into the calibrated probability, and how candidates are cut. Empty for a
    # classifier (probability = sigmoid(logit / temperature), no candidates).
    localisation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = {"balanced", "high_sensitivity"} - set(self.thresholds)
        if missing:
            raise ValueError(f"thresholds lack {sorted(missing)}")
        if self.default_operating_point not in self.thresholds:
            raise ValueError(f"unknown default operating point {self.default_operating_point!r}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")

    @property
    def threshold(self) -> float:
        """The threshold of the default operating point."""
        return float(self.thresholds[self.default_operating_point])

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["spec"] = self.spec.to_dict()
        data["thresholds"] = {k: float(v) for k, v in self.thresholds.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["spec"] = ImageSpec.from_dict(data.get("spec") or {})
        if "thresholds" in values:
            values["thresholds"] = {k: float(v) for k, v in values["thresholds"].items()}
        return cls(**values)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_safe(value: Any, *, digits: int | None = None) -> Any:
    """Recursively replace NaN/infinite floats by None (strict JSON: jsonb, browsers), numpy scalars
    by Python numbers, tuples by lists and keys by strings; with `digits`, round the floats.

    The one JSON-safe conversion of the project: model cards, evaluation reports, the registry rows
    (through `diagnosis.inference`) and training progress (through `diagnosis.training_bridge`)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v, digits=digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, digits=digits) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if digits is not None:
            return round(value, digits)
    return value


def _card_json(card: ModelCard) -> str:
    return json.dumps(json_safe(card.to_dict()), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def write_card(card: ModelCard, out_dir: Path) -> None:
    """Rewrite card.json in place (atomically via a temp file); the model file is untouched."""
    out_dir = Path(out_dir)
    tmp = out_dir / f".{CARD_FILE}.{uuid.uuid4().hex}"
    tmp.write_text(_card_json(card))
    os.replace(tmp, out_dir / CARD_FILE)


def save(
    model: keras.Model,
    card: ModelCard,
    out_dir: str | Path,
    *,
    plots: dict[str, Path] | None = None,
) -> ModelCard:
    """Write model + card (+ plots) atomically: built in a temp folder beside `out_dir`, then renamed.

    Fills `sha256` (of model.keras) and `created_at` if empty; returns the card as written. An existing
    artifact at `out_dir` is replaced only once the new one is complete.
    """
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        model.save(tmp / MODEL_FILE)
        card = dataclasses.replace(
            card, sha256=sha256_file(tmp / MODEL_FILE), created_at=card.created_at or _now()
        )
        if plots:
            (tmp / PLOTS_DIR).mkdir()
            for name, src in plots.items():
                shutil.copyfile(src, tmp / PLOTS_DIR / Path(name).name)
        (tmp / CARD_FILE).write_text(_card_json(card))
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card


def read_card(artifact_dir: str | Path) -> ModelCard:
    """Read card.json (no TensorFlow import)."""
    path = Path(artifact_dir) / CARD_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InvalidArtifactError(f"no {CARD_FILE} in artifact folder") from exc
    except json.JSONDecodeError as exc:
        raise InvalidArtifactError(f"malformed {CARD_FILE}") from exc
    try:
        return ModelCard.from_dict(data)
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidArtifactError(f"invalid {CARD_FILE}: {exc}") from exc


def verify(artifact_dir: str | Path) -> ModelCard:
    """Read the card and check the model file's sha256 against it (no TensorFlow import)."""
    artifact_dir = Path(artifact_dir)
    card = read_card(artifact_dir)
    model_path = artifact_dir / MODEL_FILE
    if not model_path.is_file():
        raise InvalidArtifactError(f"no {MODEL_FILE} in artifact folder")
    actual = sha256_file(model_path)
    if not card.sha256 or actual != card.sha256:
        raise ChecksumMismatchError(
            f"{MODEL_FILE} sha256 {actual[:12]}… does not match card {card.sha256[:12] or '(none)'}…"
        )
    return card


def load(artifact_dir: str | Path) -> tuple[keras.Model, ModelCard]:
    """Verify the checksum, then load the model (inference only, not compiled)."""
    import keras

    card = verify(artifact_dir)
    model = keras.models.load_model(Path(artifact_dir) / MODEL_FILE, compile=False)
    return model, card
