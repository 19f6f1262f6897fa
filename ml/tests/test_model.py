from __future__ import annotations

import numpy as np
import pytest

from ml.config import ImageSpec
from ml.model import LAST_CONV, LOGIT, build_model, fold_batchnorm, lite_checkpoint_path
from ml.torch_weights import UnsupportedCheckpointError, load_state_dict


def test_plain_model_outputs_one_logit():
    model = build_model(ImageSpec(size=32), "plain", width=4, depth=3, seed=0)
    assert model.output_shape == (None, 1)
    assert model.get_layer(LAST_CONV).output.shape[1:3] == (8, 8)
    assert model.get_layer(LOGIT).units == 1


def test_lite_checkpoint_reads_with_numpy_only():
    state = load_state_dict(lite_checkpoint_path("efficientnet_lite0"))
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert sum(k.endswith("_depthwise_conv.weight") for k in state) == 16
    var = state["_bn1.running_var"]
    assert var.dtype == np.float32
    assert np.all(var > 0)
    # statistics of this exact checkpoint (efficientnet-lite0-57934424.pth)
    assert sum(v.size for k, v in state.items() if "num_batches" not in k) == 4_694_024
    assert float(np.abs(state["_conv_stem.weight"]).sum()) == pytest.approx(387.12, abs=0.01)
    assert float(state["_bn0.running_var"].mean()) == pytest.approx(6.7053, abs=1e-3)


def test_lite0_pretrained_copies_every_tensor():
    spec = ImageSpec(size=64)
    model = build_model(spec, "efficientnet_lite0", pretrained=True)
    state = load_state_dict(lite_checkpoint_path("efficientnet_lite0"))
    stem = model.get_layer("stem_conv").get_weights()[0]
    assert stem.shape == (3, 3, 1, 32)
    expected = state["_conv_stem.weight"].sum(axis=1).transpose(1, 2, 0)
    assert np.allclose(stem[:, :, 0, :], expected)
    dw = model.get_layer("block15_dwconv").get_weights()[0]
    assert np.allclose(
        dw[:, :, :, 0], state["_blocks.15._depthwise_conv.weight"][:, 0].transpose(1, 2, 0)
    )
    mean = model.get_layer("head_bn").get_weights()[2]
    assert np.allclose(mean, state["_bn1.running_mean"])
    assert model.get_layer(LAST_CONV).output.shape[1:] == (2, 2, 1280)
    assert model.output_shape == (None, 1)


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError):
        build_model(ImageSpec(size=32), "resnet9000")


def test_restricted_unpickler_refuses_arbitrary_globals(tmp_path):
    import pickle

    path = tmp_path / "evil.pth"
    with path.open("wb") as fh:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(obj, fh, protocol=2)
        pickle.dump(print, fh, protocol=2)  # a global that is not on the allow-list
    with pytest.raises(UnsupportedCheckpointError):
        load_state_dict(path)


def _randomise_batchnorm(model, seed: int = 0) -> None:
    """Trained-looking statistics, so folding has something to get wrong."""
    from keras import layers

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n).astype(np.float32),  # gamma
                    rng.normal(0, 0.2, n).astype(np.float32),  # beta
                    rng.normal(0, 0.5, n).astype(np.float32),  # moving mean
                    rng.uniform(0.5, 2.0, n).astype(np.float32),  # moving variance
                ]
            )


@pytest.mark.parametrize("arch", ["plain", "efficientnet_lite0"])
def test_fold_batchnorm_keeps_outputs_and_grad_cam(arch):
    from keras import layers

    from ml.gradcam import gradcam_batch

    spec = ImageSpec(size=64)
    model = build_model(spec, arch, width=8, depth=2, seed=0)
    _randomise_batchnorm(model)
    folded = fold_batchnorm(model)
    assert folded is not model
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in folded.layers)
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    batch = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 1)).astype(np.float32)
    logits, cams = gradcam_batch(model, batch, layer=LAST_CONV)
    folded_logits, folded_cams = gradcam_batch(folded, batch, layer=LAST_CONV)
    np.testing.assert_allclose(folded_logits, logits, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(folded_cams, cams, atol=1e-3)
    # The original is untouched (training still needs its BatchNormalization layers).
    np.testing.assert_allclose(gradcam_batch(model, batch, layer=LAST_CONV)[0], logits, atol=1e-6)


def test_fold_batchnorm_leaves_a_convolution_whose_output_is_also_used_elsewhere():
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 1))
    conv = layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    bn = layers.BatchNormalization(name="bn")(conv)
    both = layers.Add(name="add")([conv, bn])  # conv's output feeds two layers
    outputs = layers.Dense(1, name=LOGIT)(layers.GlobalAveragePooling2D()(both))
    model = keras.Model(inputs, outputs)
    _randomise_batchnorm(model)
    assert fold_batchnorm(model) is model  # nothing safely foldable
