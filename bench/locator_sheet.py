"""Where a locating model marks fractures: a contact sheet of hits and misses on a split.

    .venv/bin/python bench/locator_sheet.py --model ml/weights/locate-256-v1 --data DATA_DIR \
        --split test --out ml/weights/locate-256-v1/plots/localisation_examples_test.jpg

For every fractured image of the split that has expert boxes it serves the image through
`ml.serving.Predictor` (the graph the portal serves) and checks whether the best candidate hits an
expert box (`ml.metrics.candidate_hits`: its centre within the box plus 5 % of the longer side).
The sheet shows the first `--per-group` hits and misses (in image id order, no cherry-picking):
the Grad-CAM overlay, expert boxes in green, the model's candidates in cyan with rank and score.
It prints the top-1 hit rate it saw, which must equal `python -m ml.evaluate`'s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
TILE = 320


def _tile(image, result, boxes, caption: str):
    import cv2

    from ml.gradcam import draw_candidates, overlay

    rgb = overlay(image, result.heatmap) if result.heatmap is not None else np.dstack([image] * 3)
    thickness = max(1, round(max(image.shape) / 300))
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(rgb, (round(x0), round(y0)), (round(x1), round(y1)), (40, 220, 40), thickness)
    draw_candidates(rgb, result.candidates[:3])
    h, w = rgb.shape[:2]
    scale = TILE / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), cv2.INTER_AREA)
    tile = np.full((TILE + 22, TILE, 3), 255, np.uint8)
    tile[: small.shape[0], : small.shape[1]] = small
    cv2.putText(tile, caption, (4, TILE + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1)
    return tile


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, required=True, help="sheet image (.jpg or .png)")
    p.add_argument("--per-group", type=int, default=6)
    p.add_argument("--columns", type=int, default=6)
    args = p.parse_args()

    import cv2

    from ml.data import load_records, read_boxes, split_records
    from ml.metrics import candidate_hits
    from ml.preprocess import read_image
    from ml.serving import Predictor

    predictor = Predictor.load(args.model)
    if not predictor.localises:
        raise SystemExit(f"{args.model} does not localise (no localisation section in its card)")
    boxes = read_boxes(args.data / "boxes.csv")
    records = [
        r for r in split_records(load_records(args.data), args.split) if r.label and boxes.get(r.id)
    ]
    hits, misses, n_hit = [], [], 0
    for record in sorted(records, key=lambda r: r.id):
        image = read_image(record.path)
        (result,) = predictor.predict([image], min_score=0.0)
        best = result.candidates[0] if result.candidates else None
        hit = best is not None and any(
            candidate_hits((best["x0"], best["y0"], best["x1"], best["y1"]), b, image.shape[:2])
            for b in boxes[record.id]
        )
        n_hit += hit
        group = hits if hit else misses
        if len(group) < args.per_group:
            caption = f"{'HIT' if hit else 'MISS'} {record.id} {record.body_part} p={result.probability:.2f}"
            group.append(_tile(image, result, boxes[record.id], caption))
    print(f"{args.split}: top-1 hit {n_hit}/{len(records)} = {n_hit / max(1, len(records)):.3f}")
    tiles = hits + misses
    blank = np.full_like(tiles[0], 255)
    rows = []
    for start in range(0, len(tiles), args.columns):
        row = tiles[start : start + args.columns]
        rows.append(np.hstack(row + [blank] * (args.columns - len(row))))
    sheet = np.vstack(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(
        str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80]
    )
    print(f"wrote {args.out} ({len(hits)} hits, {len(misses)} misses)")


if __name__ == "__main__":
    main()
