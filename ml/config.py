"""Frozen configuration dataclasses shared by training, evaluation and serving (no TensorFlow)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageSpec:
    """Model input: grayscale, one channel, letterboxed to `size` x `size`, optional CLAHE."""

    size: int = 256
    clahe: bool = True
    clahe_clip: float = 2.0

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"ImageSpec.size must be >= 8, got {self.size}")
        if self.clahe_clip <= 0:
            raise ValueError(f"ImageSpec.clahe_clip must be > 0, got {self.clahe_clip}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class TrainConfig:
    """One training run. `epochs` counts all phases; `head_epochs` of them train only the head."""

    arch: str = "efficientnet_lite0"
    pretrained: bool = True
    size: int = 256
    clahe: bool = True
    epochs: int = 12
    head_epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-3
    finetune_lr: float = 3e-4
    weight_decay: float = 1e-4
    seed: int = 0
    balance: str = "class_weight"  # "class_weight" | "sampling" | "none"
    patience: int = 4
    width: int = 32  # plain CNN only
    depth: int = 4  # plain CNN only
    dropout: float = 0.2
    augment: bool = True
    tta: bool = True  # flip test-time augmentation during validation/evaluation
    version: str = ""
    max_train_images: int = 0  # 0 = all; a cap for smoke runs
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> ImageSpec:
        return ImageSpec(size=self.size, clahe=self.clahe)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
