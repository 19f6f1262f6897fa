"""Retrain on a full dataset folder through the product's own pipeline and time it.

Registers an active model (the shipped one by default), freezes a snapshot of the dataset folder
(its test split becomes the frozen test split), runs one training run in this process exactly as
the `training` worker would (fine-tune of the active model by default), and prints the wall time of
each phase with the candidate's and the active model's metrics on the same test images.

Usage (a fresh scratch database; it is migrated here):
    dropdb -h 127.0.0.1 -U postgres --if-exists fp_retrain_bench
    createdb -h 127.0.0.1 -U postgres fp_retrain_bench
    DJANGO_DEBUG=1 DATABASE_URL=postgres://postgres@127.0.0.1:5432/fp_retrain_bench \\
        .venv/bin/python bench/retrain_full.py --data PATH/TO/fracture-xray --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fracture_portal.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("CELERY_BROKER_URL", "")  # nothing is queued: the run executes here


def _value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="split/label folder + manifest")
    parser.add_argument("--active", type=Path, default=None, help="active model (default: shipped)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--from-config", action="store_true", help="train instead of fine-tune")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "bench-retrain")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "retrain_full.json"
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import transaction

    from diagnosis.models import TrainingRun
    from diagnosis.services.datasets import snapshot_create
    from diagnosis.services.models import model_version_register
    from diagnosis.services.training import training_run_execute, training_run_start

    args.work.mkdir(parents=True, exist_ok=True)
    settings.MEDIA_ROOT = args.work / "media"
    settings.MODEL_STORE_DIR = args.work / "models"
    settings.TRAINING_WORK_DIR = args.work / "training"
    call_command("migrate", verbosity=0)
    with transaction.atomic():
        active, _ = model_version_register(
            artifact_dir=Path(args.active or settings.FRACTURE_MODEL_DIR), activate=True
        )

    started = time.perf_counter()
    snapshot = snapshot_create(base_dir=args.data.resolve())
    snapshot_s = time.perf_counter() - started
    config: dict[str, object] = {"epochs": args.epochs, "fine_tune": not args.from_config}
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = _value(value)
    config["snapshot_id"] = snapshot.pk
    run = training_run_start(trigger=TrainingRun.Trigger.COMMAND, config=config, dispatch=False)
    run_started = time.perf_counter()
    training_run_execute(run_id=run.pk)
    run_s = time.perf_counter() - run_started
    run.refresh_from_db()
    if run.status != TrainingRun.Status.SUCCEEDED:
        print(run.log, file=sys.stderr)
        print(f"run {run.status}: {run.error}", file=sys.stderr)
        return 1
    candidate = run.result_version
    train_s = float(candidate.card.get("training", {}).get("seconds", 0.0))
    result = {
        "data": str(args.data),
        "config": run.config,
        "snapshot": snapshot.version,
        "counts": {s: snapshot.counts[s] for s in ("train", "val", "test")},
        "seconds": {
            "snapshot": round(snapshot_s, 1),
            "train": round(train_s, 1),
            "evaluate_and_promote": round(run_s - train_s, 1),
            "total": round(snapshot_s + run_s, 1),
        },
        "active": {"version": active.version, **(run.decision.get("active_metrics") or {})},
        "candidate": {"version": candidate.version, **candidate.metrics},
        "comparison": run.decision.get("comparison"),
        "promoted": run.decision.get("promote"),
        "reasons": run.decision.get("reasons"),
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["seconds"]))
    print(
        "| model | AUROC (95% CI) | sens / spec, high-sensitivity | sens / spec, balanced | ECE |"
    )
    print("|---|---|---|---|---|")
    for name in ("active", "candidate"):
        m = result[name]
        ci = m.get("auroc_ci") or [None, None]
        ops = m.get("operating_points", {})
        hs, bal = ops.get("high_sensitivity", {}), ops.get("balanced", {})
        print(
            f"| {name} `{m['version']}` | {m.get('auroc')} ({ci[0]}-{ci[1]}) | "
            f"{hs.get('sensitivity')} / {hs.get('specificity')} | "
            f"{bal.get('sensitivity')} / {bal.get('specificity')} | {m.get('ece')} |"
        )
    print(f"difference: {result['comparison']}; promoted: {result['promoted']}")
    for reason in result["reasons"] or []:
        print(f"- {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
