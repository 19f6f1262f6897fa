"""Train a fracture classifier: `python -m ml.train --data DIR --out DIR [options]`.

Pretrained EfficientNet-Lite: the head first (backbone frozen), then the backbone from `--unfreeze-from`
on at a lower learning rate with a cosine schedule, BatchNorm kept in inference mode. The plain CNN trains
everything from the start. Early stopping on validation AUROC; a checkpoint per epoch (`--resume`);
temperature and operating points fitted on validation; the artifact is written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml import metrics
from ml.config import TrainConfig
from ml.data import batches, load_images, load_records, split_records
from ml.model import LAST_CONV, build_model
from ml.registry import ModelCard, read_card

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]
HIGH_SENSITIVITY_TARGET = 0.90


@dataclass
class TrainResult:
    artifact_dir: Path | None
    card: ModelCard | None
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_auroc: float = float("nan")
    cancelled: bool = False
    stopped_early: bool = False
    seconds: float = 0.0


def configure_threads(threads: int | None = None) -> None:
    """Pin TensorFlow's thread pools (call before TensorFlow runs anything)."""
    import tensorflow as tf

    n = threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, n))
    except RuntimeError:  # already initialised in this process
        logger.debug("TensorFlow threads already configured")


def _set_trainable(model: keras.Model, phase: str, unfreeze_from: str | None) -> None:
    """phase "head": only the classifier; "finetune": layers from `unfreeze_from` on (BN frozen);
    "all": everything (plain CNN, BN trains)."""
    from keras import layers

    if phase == "all":
        for layer in model.layers:
            layer.trainable = True
        return
    started = phase == "finetune" and not unfreeze_from
    for layer in model.layers:
        if phase == "finetune" and unfreeze_from and layer.name.startswith(unfreeze_from):
            started = True
        head = layer.name in ("logit", "dropout", "gap")
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
        else:
            layer.trainable = head or (phase == "finetune" and started)


class _Trainer:
    def __init__(self, model: keras.Model, lr: float, weight_decay: float) -> None:
        import keras
        import tensorflow as tf

        self.model = model
        self.optimizer = keras.optimizers.AdamW(
            learning_rate=lr, weight_decay=weight_decay, clipnorm=2.0
        )
        self.optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        variables = model.trainable_variables

        @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
        def step(x: Any, y: Any, w: Any) -> Any:
            with tf.GradientTape() as tape:
                logits = tf.reshape(model(x, training=True), [-1])
                losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
                loss = tf.reduce_sum(losses * w) / tf.reduce_sum(w)
            grads = tape.gradient(loss, variables)
            self.optimizer.apply_gradients(zip(grads, variables, strict=True))
            return loss

        self.step = step

    def set_lr(self, lr: float) -> None:
        self.optimizer.learning_rate.assign(lr)


def _lr_at(cfg: TrainConfig, phase: str, t: float) -> float:
    """Learning rate at progress t in [0, 1) of the phase: constant for the head, cosine otherwise
    (with a short linear warm-up)."""
    if phase == "head":
        return cfg.lr
    base = cfg.finetune_lr if phase == "finetune" else cfg.lr
    warm = 0.03
    if t < warm:
        return base * (0.1 + 0.9 * t / warm)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm))))


def _plot_history(history: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(epochs, [h["loss"] for h in history], marker="o", label="train loss (weighted)")
    ax1.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val loss")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax2.plot(epochs, [h["val_auroc"] for h in history], marker="o", color="C2")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation AUROC")
    for h in history:
        if h.get("phase_start"):
            for ax in (ax1, ax2):
                ax.axvline(h["epoch"] - 0.5, color="grey", lw=0.8, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _phases(cfg: TrainConfig, finetune_only: bool) -> list[str]:
    if cfg.arch == "plain" or (not cfg.pretrained and not finetune_only):
        return ["all"] * cfg.epochs
    if finetune_only:
        return ["finetune"] * cfg.epochs
    head = min(cfg.head_epochs, cfg.epochs)
    return ["head"] * head + ["finetune"] * (cfg.epochs - head)


def fit_operating_points(y: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
    """Calibration and thresholds from VALIDATION labels and logits.

    Platt scaling sigmoid(a z + b) is expressed as a logit offset b / a (to be added to the model's
    logit bias) and a temperature 1 / a, so serving stays `sigmoid(logit / temperature)`.
    """
    a, b = metrics.fit_platt(y, logits)
    offset, temperature = b / a, 1.0 / a
    prob = 1.0 / (1.0 + np.exp(-(logits + offset) / temperature))
    thresholds = {
        "balanced": metrics.youden_threshold(y, prob),
        "high_sensitivity": metrics.threshold_for_sensitivity(y, prob, HIGH_SENSITIVITY_TARGET),
    }
    val = {
        "n": len(y),
        "positives": int(y.sum()),
        "auroc": metrics.auroc(y, prob),
        "ece_uncalibrated": metrics.ece(y, 1.0 / (1.0 + np.exp(-logits))),
        "ece": metrics.ece(y, prob),
        "operating_points": {k: metrics.at_threshold(y, prob, t) for k, t in thresholds.items()},
    }
    return {
        "temperature": temperature,
        "logit_offset": offset,
        "thresholds": thresholds,
        "val": val,
    }


def shift_logit_bias(model: keras.Model, offset: float) -> None:
    """Add `offset` to the bias of the final logit layer (folds a calibration offset into the model)."""
    from ml.model import LOGIT

    layer = model.get_layer(LOGIT)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + np.float32(offset)])


def calibrate(
    model_dir: str | Path, data: str | Path, out_dir: str | Path | None = None
) -> ModelCard:
    """Refit calibration and operating points of an artifact on the `val` split and save it again
    (atomically, to `out_dir` or in place). Test data is not read."""
    import dataclasses

    from ml import registry
    from ml.inference import predict_logits

    model, card = registry.load(model_dir)
    recs = split_records(load_records(data), "val")
    y = np.array([r.label for r in recs], np.float64)
    x = load_images(recs, card.spec)[..., np.newaxis].astype(np.float32)
    logits = predict_logits(model, x).astype(np.float64)
    fitted = fit_operating_points(y, logits)
    shift_logit_bias(model, fitted["logit_offset"])
    training = {
        **card.training,
        "calibration": {
            "method": "platt on val (offset folded into the logit bias, temperature = 1/a)",
            "logit_offset": fitted["logit_offset"],
            "temperature": fitted["temperature"],
        },
    }
    new = dataclasses.replace(
        card,
        thresholds=fitted["thresholds"],
        temperature=fitted["temperature"],
        metrics={**{k: v for k, v in card.metrics.items() if k != "test"}, "val": fitted["val"]},
        training=training,
        sha256="",
        created_at="",
    )
    plots_dir = Path(model_dir) / registry.PLOTS_DIR
    plots = {p.name: p for p in plots_dir.glob("*.png")} if plots_dir.is_dir() else None
    # save() copies the plots into its temp folder before it replaces the old artifact
    target = Path(out_dir) if out_dir else Path(model_dir)
    return registry.save(model, new, target, plots=plots)


def train(
    config: TrainConfig,
    data: str | Path,
    out_dir: str | Path,
    *,
    init_from: Path | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    resume: bool = False,
    work_dir: Path | None = None,
    keep_work: bool = False,
    show_progress: bool = True,
) -> TrainResult:
    """Train on the `train` split, select and calibrate on `val`, write the artifact to `out_dir`.

    `init_from` (an artifact folder) fine-tunes that model (its architecture and input spec win over
    `config`). `progress` receives dicts (phase, epoch, epochs, step, steps, loss, val_auroc, ...).
    `should_stop` is polled every batch: when it returns True, training ends without writing an
    artifact and the result has `cancelled=True`. Test data is never read.
    """
    import keras
    from tqdm import tqdm

    from ml import registry
    from ml.inference import predict_logits

    started = time.monotonic()
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir else out_dir.parent / f"{out_dir.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "state.json"
    init_card = read_card(init_from) if init_from else None
    if init_card is not None:
        config = TrainConfig.from_dict(
            {
                **config.to_dict(),
                "arch": init_card.architecture,
                "size": init_card.spec.size,
                "clahe": init_card.spec.clahe,
            }
        )
    spec = config.spec
    if init_card is not None and init_card.spec != spec:
        spec = init_card.spec

    records = load_records(data)
    train_recs, val_recs = split_records(records, "train"), split_records(records, "val")
    if config.max_train_images:
        rng0 = np.random.default_rng(config.seed)
        keep = rng0.permutation(len(train_recs))[: config.max_train_images]
        train_recs = [train_recs[i] for i in sorted(keep)]
    if not train_recs or not val_recs:
        raise ValueError("the dataset needs non-empty train and val splits")
    y_train = np.array([r.label for r in train_recs], np.int64)
    y_val = np.array([r.label for r in val_recs], np.int64)
    if len(set(y_val.tolist())) < 2:
        raise ValueError("the val split needs both classes")
    cache = work / "cache"
    x_train = load_images(train_recs, spec, cache_dir=cache)
    x_val = load_images(val_recs, spec, cache_dir=cache)[..., np.newaxis].astype(np.float32)
    logger.info("data loaded: train=%d val=%d size=%d", len(y_train), len(y_val), spec.size)

    if init_from is not None:
        model, _ = registry.load(init_from)
    else:
        model = build_model(
            spec,
            config.arch,
            width=config.width,
            depth=config.depth,
            dropout=config.dropout,
            pretrained=config.pretrained,
            seed=config.seed,
        )
    phases = _phases(config, finetune_only=init_from is not None)
    unfreeze_from = config.extra.get("unfreeze_from")
    state: dict[str, Any] = {"epoch": 0, "history": [], "best_auroc": -1.0, "best_epoch": -1}
    if resume and state_path.is_file():
        state = json.loads(state_path.read_text())
        model.load_weights(work / "last.weights.h5")
        logger.info("resumed after epoch %d", state["epoch"])
    stop_early = False
    cancelled = False
    trainer: _Trainer | None = None
    current_phase = None
    steps = math.ceil(len(y_train) / config.batch_size)
    for epoch in range(state["epoch"], len(phases)):
        phase = phases[epoch]
        if phase != current_phase:
            _set_trainable(model, phase, unfreeze_from)
            trainer = _Trainer(model, _lr_at(config, phase, 0.0), config.weight_decay)
            current_phase = phase
        assert trainer is not None  # noqa: S101
        phase_epochs = [i for i, p in enumerate(phases) if p == phase]
        phase_pos, phase_len = phase_epochs.index(epoch), len(phase_epochs)
        rng = np.random.default_rng([config.seed, epoch])
        losses = []
        bar = tqdm(
            batches(
                x_train,
                y_train,
                batch_size=config.batch_size,
                rng=rng,
                balance=config.balance,
                augment=config.augment,
            ),
            total=steps,
            desc=f"epoch {epoch + 1}/{len(phases)} [{phase}]",
            disable=not show_progress,
            file=sys.stderr,
        )
        for step, (xb, yb, wb) in enumerate(bar):
            if should_stop is not None and should_stop():
                cancelled = True
                break
            trainer.set_lr(_lr_at(config, phase, (phase_pos + step / steps) / phase_len))
            loss = float(trainer.step(xb, yb, wb))
            losses.append(loss)
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
            if progress is not None:
                progress(
                    {
                        "phase": phase,
                        "epoch": epoch + 1,
                        "epochs": len(phases),
                        "step": step + 1,
                        "steps": steps,
                        "loss": float(np.mean(losses)),
                        "fraction": (epoch + (step + 1) / steps) / len(phases),
                    }
                )
        bar.close()
        if cancelled:
            break
        val_logits = predict_logits(model, x_val, tta=config.tta)
        val_auroc = metrics.auroc(y_val, val_logits)
        val_loss = metrics.nll(y_val, val_logits)
        improved = val_auroc > state["best_auroc"]
        record = {
            "epoch": epoch + 1,
            "phase": phase,
            "phase_start": phase_pos == 0,
            "loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_auroc": val_auroc,
            "lr_end": _lr_at(config, phase, (phase_pos + 1) / phase_len - 1e-9),
            "seconds": round(time.monotonic() - started, 1),
        }
        state["history"].append(record)
        if improved:
            state["best_auroc"], state["best_epoch"] = val_auroc, epoch + 1
            model.save_weights(work / "best.weights.h5")
        model.save_weights(work / "last.weights.h5")
        state["epoch"] = epoch + 1
        state_path.write_text(json.dumps(state, indent=1))
        logger.info("epoch %d: loss %.4f val_auroc %.4f", epoch + 1, record["loss"], val_auroc)
        if show_progress:
            tqdm.write(
                f"epoch {epoch + 1}: loss {record['loss']:.4f} val_loss {val_loss:.4f} "
                f"val_auroc {val_auroc:.4f}{' *' if improved else ''}",
                file=sys.stderr,
            )
        if progress is not None:
            progress(
                {
                    "phase": phase,
                    "epoch": epoch + 1,
                    "epochs": len(phases),
                    "step": steps,
                    "steps": steps,
                    "loss": record["loss"],
                    "val_auroc": val_auroc,
                    "fraction": (epoch + 1) / len(phases),
                }
            )
        finetuning = phase != "head"
        if finetuning and epoch + 1 - state["best_epoch"] >= config.patience:
            stop_early = True
            break

    history = state["history"]
    if cancelled:
        return TrainResult(
            None,
            None,
            history,
            state["best_epoch"],
            state["best_auroc"],
            cancelled=True,
            seconds=time.monotonic() - started,
        )
    model.load_weights(work / "best.weights.h5")
    val_logits = predict_logits(model, x_val, tta=False)
    fitted = fit_operating_points(y_val.astype(np.float64), val_logits.astype(np.float64))
    shift_logit_bias(model, fitted["logit_offset"])
    plots = {"training_curves.png": _plot_history(history, work / "training_curves.png")}
    version = config.version or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    card = ModelCard(
        version=version,
        architecture=config.arch,
        spec=spec,
        gradcam_layer=LAST_CONV,
        thresholds=fitted["thresholds"],
        default_operating_point="balanced",
        temperature=fitted["temperature"],
        metrics={"val": fitted["val"]},
        training={
            "config": config.to_dict(),
            "data": {
                "train": len(y_train),
                "val": len(y_val),
                "train_positives": int(y_train.sum()),
            },
            "init_from": init_card.version if init_card else None,
            "best_epoch": state["best_epoch"],
            "best_val_auroc": state["best_auroc"],
            "epochs_run": len(history),
            "stopped_early": stop_early,
            "history": history,
            "seconds": round(time.monotonic() - started, 1),
            "keras": keras.__version__,
            "tta_in_card": False,
            "calibration": {
                "method": "platt on val (offset folded into the logit bias, temperature = 1/a)",
                "logit_offset": fitted["logit_offset"],
                "temperature": fitted["temperature"],
            },
        },
    )
    card = registry.save(model, card, out_dir, plots=plots)
    result = TrainResult(
        out_dir,
        card,
        history,
        state["best_epoch"],
        state["best_auroc"],
        stopped_early=stop_early,
        seconds=time.monotonic() - started,
    )
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, type=Path, help="split/label/ folder or manifest.csv")
    p.add_argument("--out", required=True, type=Path, help="artifact folder to write")
    p.add_argument(
        "--arch", default=d.arch, choices=["plain", "efficientnet_lite0", "efficientnet_lite1"]
    )
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=d.pretrained)
    p.add_argument("--size", type=int, default=d.size)
    p.add_argument("--no-clahe", action="store_true")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--head-epochs", type=int, default=d.head_epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--finetune-lr", type=float, default=d.finetune_lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--balance", default=d.balance, choices=["class_weight", "sampling", "none"])
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--depth", type=int, default=d.depth)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--tta", action="store_true", help="flip TTA for validation during training")
    p.add_argument(
        "--unfreeze-from",
        default="block3_",
        help="first backbone layer (name prefix) to fine-tune; '' fine-tunes the whole backbone",
    )
    p.add_argument("--version", default="")
    p.add_argument("--max-train-images", type=int, default=0)
    p.add_argument("--init-from", type=Path, default=None, help="artifact folder to fine-tune")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    configure_threads(args.threads)
    config = TrainConfig(
        arch=args.arch,
        pretrained=args.pretrained and args.arch != "plain",
        size=args.size,
        clahe=not args.no_clahe,
        epochs=args.epochs,
        head_epochs=args.head_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        finetune_lr=args.finetune_lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        balance=args.balance,
        patience=args.patience,
        width=args.width,
        depth=args.depth,
        dropout=args.dropout,
        augment=not args.no_augment,
        tta=args.tta,
        version=args.version,
        max_train_images=args.max_train_images,
        extra={"unfreeze_from": args.unfreeze_from},
    )
    result = train(
        config,
        args.data,
        args.out,
        init_from=args.init_from,
        resume=args.resume,
        work_dir=args.work_dir,
        keep_work=args.keep_work,
    )
    summary: dict[str, Any] = {
        "artifact": str(result.artifact_dir) if result.artifact_dir else None,
        "best_epoch": result.best_epoch,
        "best_val_auroc": result.best_val_auroc,
        "stopped_early": result.stopped_early,
        "seconds": round(result.seconds, 1),
    }
    if result.card is not None:
        summary["thresholds"] = result.card.thresholds
        summary["temperature"] = result.card.temperature
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
