"""Grad-CAM sanity check: where does the model look?

    .venv/bin/python bench/ml_gradcam_sanity.py --model ml/weights/lite0-256-v1 \
        --data DATA_DIR --split test --out var/gradcam [--sheet ml/weights/lite0-256-v1/plots/gradcam_examples.png]

For every image of the split it measures the share of Grad-CAM mass that falls (a) in the letterbox
padding and (b) in a band along the image border (8 % of each side, where side markers and labels
usually sit), against the share of area those regions cover (what a uniform map would give). It also
writes captioned overlays of the most confident true positives, false positives and false negatives and
a contact sheet of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
BAND = 0.08


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sheet", type=Path, default=None)
    p.add_argument("--per-group", type=int, default=3)
    args = p.parse_args()

    import cv2

    from ml.data import load_records, split_records
    from ml.gradcam import overlay
    from ml.preprocess import letterbox_geometry, read_image, unletterbox
    from ml.serving import Predictor

    predictor = Predictor.load(args.model)  # the served graph, as the workers load it
    card = predictor.card
    assert card is not None
    size = card.spec.size
    records = split_records(load_records(args.data), args.split)
    rows = []
    for start in range(0, len(records), 32):
        chunk = records[start : start + 32]
        x = np.stack([predictor.prepare(read_image(r.path)) for r in chunk])
        raw = predictor.raw_outputs(x, gradcam=True)
        maps, probs = raw["cam"], predictor.probabilities(raw)
        for r, hm, prob in zip(chunk, maps, probs, strict=True):
            full = cv2.resize(hm, (size, size), interpolation=cv2.INTER_LINEAR)
            top, left, h, w = letterbox_geometry(read_image(r.path).shape, size)
            inside = np.zeros((size, size), bool)
            inside[top : top + h, left : left + w] = True
            band = np.zeros((size, size), bool)
            by, bx = max(1, round(h * BAND)), max(1, round(w * BAND))
            band[top : top + h, left : left + w] = True
            band[top + by : top + h - by, left + bx : left + w - bx] = False
            mass = full.sum() or 1.0
            rows.append(
                {
                    "id": r.id,
                    "label": r.label,
                    "body_part": r.body_part,
                    "prob": float(prob),
                    "padding_mass": float(full[~inside].sum() / mass),
                    "padding_area": float((~inside).mean()),
                    "border_mass": float(full[band].sum() / mass),
                    "border_area": float(band.mean()),
                    "empty": bool(hm.max() == 0),
                }
            )
    t = card.threshold
    summary = {
        "model": card.version,
        "split": args.split,
        "n": len(rows),
        "empty_maps": int(sum(r["empty"] for r in rows)),
        "mean_padding_mass": float(np.mean([r["padding_mass"] for r in rows])),
        "mean_padding_area": float(np.mean([r["padding_area"] for r in rows])),
        "mean_border_mass": float(np.mean([r["border_mass"] for r in rows])),
        "mean_border_area": float(np.mean([r["border_area"] for r in rows])),
        "border_mass_predicted_fractured": float(
            np.mean([r["border_mass"] for r in rows if r["prob"] >= t] or [np.nan])
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    groups = {
        "true positive": sorted(
            (r for r in rows if r["label"] == 1 and r["prob"] >= t), key=lambda r: -r["prob"]
        ),
        "false positive": sorted(
            (r for r in rows if r["label"] == 0 and r["prob"] >= t), key=lambda r: -r["prob"]
        ),
        "false negative": sorted(
            (r for r in rows if r["label"] == 1 and r["prob"] < t), key=lambda r: r["prob"]
        ),
    }
    by_id = {r.id: r for r in records}
    tiles = []
    for group, members in groups.items():
        for row in members[: args.per_group]:
            rec = by_id[row["id"]]
            image = read_image(rec.path)
            maps = predictor.raw_outputs(predictor.prepare(image)[np.newaxis], gradcam=True)["cam"]
            ov = overlay(image, unletterbox(maps[0], image.shape, size))
            name = f"{group.replace(' ', '_')}_{row['id']}.png"
            cv2.imwrite(str(args.out / name), cv2.cvtColor(ov, cv2.COLOR_RGB2BGR))
            tiles.append((f"{group} {row['body_part']} p={row['prob']:.2f}", ov))
    summary["examples"] = {g: [r["id"] for r in m[: args.per_group]] for g, m in groups.items()}
    (args.out / "gradcam_sanity.json").write_text(
        json.dumps({"summary": summary, "images": rows}, indent=1) + "\n"
    )
    if args.sheet and tiles:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = args.per_group
        nrows = int(np.ceil(len(tiles) / cols))
        fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.2 * nrows))
        for ax in np.atleast_1d(axes).ravel():
            ax.axis("off")
        for ax, (title, img) in zip(np.atleast_1d(axes).ravel(), tiles, strict=False):
            ax.imshow(img)
            ax.set_title(title, fontsize=8)
        fig.tight_layout()
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.sheet, dpi=90)
        plt.close(fig)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
