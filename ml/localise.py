"""Fracture localisation: EfficientNet-Lite with a dense centre heat-map head (CenterNet-style).

The model takes the usual (size, size, 1) image in [0, 255] and has two outputs:
- LOGIT (N, 1): the image-level "fractured" logit from global pooling, as in the classifier;
- LOC (N, g, g, 3) at stride 16 (g = size / 16): per cell the logit that a fracture's centre lies in
  it, and the fracture's log width and log height as fractions of the input side.

Why this design (measured choices are in the model card): fractures are small (median box 0.4 % of
the image, about 16 px at 256) and a point per fracture is what a reader needs, so a centre heat-map
at stride 16 (cell 16 px; the hit margin of 5 % of the longer side is 12.8 px) with a 3 x 3
sub-cell refinement is enough, costs two small convolutions over the classifier, and needs no
anchors or box matching. The head reads the end of stage 5 (stride 16, 112 channels) plus the top
features (stride 32, upsampled), a one-level feature pyramid.

Candidates are the local maxima of the heat-map (3 x 3), best first, each a box in pixels of the
image as read. The served probability fuses LOGIT with the heat-map's peak (Platt fit on val, in the
card), and Grad-CAM explains that fused score at GRADCAM_LAYER. numpy only below the model factory
(no TensorFlow at import time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ml.config import ImageSpec
from ml.model import (
    _LITE_BLOCKS,
    BN_EPSILON,
    LAST_CONV,
    LITE_MEAN,
    LITE_STD,
    LOGIT,
    _lite_repeats,
    lite_block_output,
    lite_blocks,
    load_lite_imagenet_weights,
)
from ml.preprocess import letterbox_geometry

if TYPE_CHECKING:
    import keras

LOC = "loc"
# Grad-CAM of a locator is taken at the head's last hidden layer (stride 16), not at last_conv
# (stride 32, shared with the classifier, whose map peaks on the fracture for 0.21 of val's
# fractured images): at loc_conv2 it follows the centre evidence (0.81 on val, figures in
# ml/weights/locate-256-v1/README.md).
GRADCAM_LAYER = "loc_conv2"
STRIDE = 16
HEAT_PRIOR = 0.01  # initial probability of a fracture centre in a cell (focal-loss practice)
DEFAULT_BOX_FRACTION = 0.06  # initial box side, fraction of the input (median expert box ~6 %)


def stage_end(arch: str, stage: int) -> int:
    """Index of the last block of `stage` (0-based over the 7 stages)."""
    return sum(_lite_repeats(arch)[: stage + 1]) - 1


def tap_block(arch: str) -> int:
    """The last frozen block during training (end of stage 4, stride 16): its output is cached."""
    return stage_end(arch, 3)


def _top(x: Any, *, dropout: float) -> tuple[Any, Any]:
    """Head convolution -> (LAST_CONV features, LOGIT)."""
    from keras import layers

    x = layers.Conv2D(1280, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name="head_bn")(x)
    top = layers.ReLU(max_value=6.0, name=LAST_CONV)(x)
    pooled = layers.GlobalAveragePooling2D(name="gap")(top)
    pooled = layers.Dropout(dropout, name="dropout")(pooled)
    return top, layers.Dense(1, name=LOGIT)(pooled)


def _loc_head(stride16: Any, top: Any, width: int = 96) -> Any:
    from keras import layers

    t = layers.Conv2D(width, 1, name="loc_top")(top)
    t = layers.UpSampling2D(2, interpolation="bilinear", name="loc_up")(t)
    f = layers.Conv2D(width, 1, name="loc_lateral")(stride16)
    x = layers.Add(name="loc_merge")([f, t])
    x = layers.ReLU(name="loc_merge_relu")(x)
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="loc_conv1")(x)
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name=GRADCAM_LAYER)(x)
    return layers.Conv2D(3, 1, name=LOC)(x)


def _upper(x: Any, arch: str, *, dropout: float) -> tuple[Any, Any]:
    """Blocks after the tap -> (LOGIT, LOC)."""
    x = lite_blocks(x, arch, start=tap_block(arch) + 1, stop=stage_end(arch, 4) + 1)
    stride16 = x
    x = lite_blocks(x, arch, start=stage_end(arch, 4) + 1)
    top, logit = _top(x, dropout=dropout)
    return logit, _loc_head(stride16, top)


def _init_loc_bias(model: keras.Model) -> None:
    layer = model.get_layer(LOC)
    kernel, bias = layer.get_weights()
    bias[:] = [
        math.log(HEAT_PRIOR / (1 - HEAT_PRIOR)),
        math.log(DEFAULT_BOX_FRACTION),
        math.log(DEFAULT_BOX_FRACTION),
    ]
    layer.set_weights([kernel * 0.1, bias])


def build_locator(
    spec: ImageSpec,
    arch: str = "efficientnet_lite0",
    *,
    dropout: float = 0.2,
    pretrained: bool = False,
    seed: int | None = None,
) -> keras.Model:
    """The full model: image (size, size, 1) in [0, 255] -> [LOGIT (N, 1), LOC (N, g, g, 3)]."""
    import keras
    from keras import layers

    if spec.size % 32:
        raise ValueError(f"the locator needs an input size divisible by 32, got {spec.size}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input((spec.size, spec.size, 1), name="image")
    x = layers.Rescaling(1.0 / LITE_STD, offset=-LITE_MEAN / LITE_STD, name="normalize")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name="stem_bn")(x)
    x = layers.ReLU(max_value=6.0, name="stem_relu")(x)
    x = lite_blocks(x, arch, stop=tap_block(arch) + 1)
    logit, loc = _upper(x, arch, dropout=dropout)
    model = keras.Model(inputs, [logit, loc], name=f"{arch}_locator")
    if pretrained:
        load_lite_imagenet_weights(model, arch)
    _init_loc_bias(model)
    return model


def build_lower(model: keras.Model, arch: str = "efficientnet_lite0") -> keras.Model:
    """The frozen part of `model`: image -> the tap block's output (stride 16)."""
    import keras

    return keras.Model(
        model.input, model.get_layer(lite_block_output(arch, tap_block(arch))).output
    )


def build_upper(
    spec: ImageSpec, arch: str = "efficientnet_lite0", *, dropout: float = 0.2
) -> keras.Model:
    """The trained part over cached tap features: (g, g, C) -> [LOGIT, LOC]; layer names as in
    `build_locator`, so weights copy across by name (`copy_weights`)."""
    import keras

    grid = spec.size // STRIDE
    channels = _LITE_BLOCKS[3][4]
    inputs = keras.Input((grid, grid, channels), name="tap")
    logit, loc = _upper(inputs, arch, dropout=dropout)
    return keras.Model(inputs, [logit, loc], name=f"{arch}_locator_upper")


def copy_weights(source: keras.Model, target: keras.Model) -> int:
    """Copy every layer's weights from `source` to the same-named layer of `target`."""
    names = {layer.name for layer in target.layers}
    copied = 0
    for layer in source.layers:
        if layer.name in names and layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())
            copied += 1
    return copied


# --- Targets and candidates (numpy) ------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """How an image of shape (height, width) sits in the letterboxed model input."""

    height: int
    width: int
    size: int

    def to_input(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        top, left, h, w = letterbox_geometry((self.height, self.width), self.size)
        sx, sy = w / self.width, h / self.height
        x0, y0, x1, y1 = box
        return (left + x0 * sx, top + y0 * sy, left + x1 * sx, top + y1 * sy)

    def to_image(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        top, left, h, w = letterbox_geometry((self.height, self.width), self.size)
        sx, sy = w / self.width, h / self.height
        x0, y0, x1, y1 = box
        return (
            float(np.clip((x0 - left) / sx, 0, self.width)),
            float(np.clip((y0 - top) / sy, 0, self.height)),
            float(np.clip((x1 - left) / sx, 0, self.width)),
            float(np.clip((y1 - top) / sy, 0, self.height)),
        )


def heat_targets(
    boxes_input: list[tuple[float, float, float, float]], size: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Boxes in model-input pixels -> (heat (g, g) in [0, 1], log size (g, g, 2), size mask (g, g)).

    Each box puts a Gaussian on the grid at its centre (sigma from its size, at least 0.6 cell), the
    peak cell exactly 1; the size target is set on the peak cell."""
    grid = size // STRIDE
    heat = np.zeros((grid, grid), np.float32)
    wh = np.zeros((grid, grid, 2), np.float32)
    mask = np.zeros((grid, grid), np.float32)
    ys, xs = np.mgrid[0:grid, 0:grid].astype(np.float32) + 0.5
    for x0, y0, x1, y1 in boxes_input:
        w, h = max(1.0, x1 - x0), max(1.0, y1 - y0)
        cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        if not (0 <= cx < grid and 0 <= cy < grid):
            continue
        sigma = max(0.6, 0.25 * max(w, h) / STRIDE)
        g = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
        i, j = int(cy), int(cx)
        g[i, j] = 1.0
        heat = np.maximum(heat, g)
        wh[i, j] = (math.log(w / size), math.log(h / size))
        mask[i, j] = 1.0
    return heat, wh, mask


def decode_candidates(
    loc: npt.NDArray[np.floating],
    geometry: Geometry,
    *,
    max_candidates: int = 5,
    min_score: float = 0.0,
) -> list[dict[str, float]]:
    """One image's LOC output (g, g, 3) -> candidates best first, boxes in pixels of the image.

    A candidate is a 3 x 3 local maximum of the centre heat-map; its centre is refined to the
    heat-weighted mean of that neighbourhood, its size is the regressed one."""
    loc = np.asarray(loc, np.float64)
    heat = 1.0 / (1.0 + np.exp(-loc[..., 0]))
    grid_h, grid_w = heat.shape
    padded = np.pad(heat, 1, constant_values=-1.0)
    neighbourhood = np.stack(
        [padded[dy : dy + grid_h, dx : dx + grid_w] for dy in range(3) for dx in range(3)]
    )
    peaks = heat >= neighbourhood.max(axis=0)
    order = np.argsort(-heat, axis=None)
    out: list[dict[str, float]] = []
    size = geometry.size
    for flat in order:
        i, j = divmod(int(flat), grid_w)
        score = float(heat[i, j])
        if score < min_score or len(out) >= max_candidates:
            break
        if not peaks[i, j]:
            continue
        i0, i1, j0, j1 = max(0, i - 1), min(grid_h, i + 2), max(0, j - 1), min(grid_w, j + 2)
        patch = heat[i0:i1, j0:j1]
        yy, xx = np.mgrid[i0:i1, j0:j1].astype(np.float64) + 0.5
        cy = float((patch * yy).sum() / patch.sum()) * STRIDE
        cx = float((patch * xx).sum() / patch.sum()) * STRIDE
        w = float(np.exp(np.clip(loc[i, j, 1], -6.0, 0.0))) * size
        h = float(np.exp(np.clip(loc[i, j, 2], -6.0, 0.0))) * size
        x0, y0, x1, y1 = geometry.to_image((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        if x1 <= x0 or y1 <= y0:  # the centre fell in the letterbox padding
            continue
        out.append(
            {
                "x0": round(x0, 1),
                "y0": round(y0, 1),
                "x1": round(x1, 1),
                "y1": round(y1, 1),
                "score": round(score, 4),
            }
        )
    return out


def heat_peak_logit(loc: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """(N, g, g, 3) -> (N,) the highest centre logit per image (evidence for the image label)."""
    values = np.asarray(loc, np.float64)
    peaks: npt.NDArray[np.float64] = values[..., 0].reshape(len(values), -1).max(axis=1)
    return peaks
