from __future__ import annotations

import numpy as np
import pytest

from ml.config import ImageSpec
from ml.model import LAST_CONV, LOGIT, build_model, lite_checkpoint_path
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
