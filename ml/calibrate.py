"""Refit calibration and operating points on validation: `python -m ml.calibrate --model DIR --data DIR`.

Platt scaling (offset folded into the logit bias, temperature = 1/a) and the "balanced" (Youden) and
"high_sensitivity" (>= 90 % sensitivity) thresholds, all on the `val` split; the artifact is saved again
atomically (new sha256). Test metrics recorded in the card are dropped, since they no longer apply.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ml.calibrate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", type=Path, default=None, help="write here instead of in place")
    args = p.parse_args(argv)
    from ml.train import calibrate

    card = calibrate(args.model, args.data, args.out)
    val = card.metrics["val"]
    summary = {
        "version": card.version,
        "temperature": card.temperature,
        "thresholds": card.thresholds,
        "val_auroc": val["auroc"],
        "val_ece": val["ece"],
        "val_ece_uncalibrated": val["ece_uncalibrated"],
        "sha256": card.sha256,
    }
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
