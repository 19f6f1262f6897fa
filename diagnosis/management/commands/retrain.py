"""`manage.py retrain [--now] [--epochs N] [--from-config] [--set key=value ...]`: start a run."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from diagnosis.exceptions import DomainError
from diagnosis.models import TrainingRun
from diagnosis.selectors.training import training_run_get
from diagnosis.services.training import training_run_execute, training_run_start


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class Command(BaseCommand):
    help = (
        "Start a training run: freeze a snapshot, fine-tune the active model (or train from the "
        "configuration), evaluate candidate and active model on the frozen test split and promote "
        "by the rule. Queued on the `training` queue, or run here with --now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--now", action="store_true", help="run in this process and wait")
        parser.add_argument("--epochs", type=int, default=None)
        parser.add_argument(
            "--from-config",
            action="store_true",
            help="train from the configuration instead of fine-tuning the active model",
        )
        parser.add_argument("--snapshot", type=int, default=None, help="reuse this snapshot id")
        parser.add_argument("--base", default=None, help="base dataset folder for a new snapshot")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help='training setting (JSON value), e.g. --set arch="plain" --set size=128',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config: dict[str, Any] = {}
        for item in options["set"]:
            key, sep, value = item.partition("=")
            if not sep:
                raise CommandError(f"--set needs KEY=VALUE, got {item!r}")
            config[key.strip()] = _value(value)
        if options["epochs"] is not None:
            config["epochs"] = options["epochs"]
        if options["from_config"]:
            config["fine_tune"] = False
        if options["snapshot"] is not None:
            config["snapshot_id"] = options["snapshot"]
        if options["base"] is not None:
            config["base_dir"] = options["base"]
        try:
            run = training_run_start(
                trigger=TrainingRun.Trigger.COMMAND, config=config, dispatch=not options["now"]
            )
        except DomainError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        self.stdout.write(f"Training run {run.pk} queued with {run.config}")
        if not options["now"]:
            return
        training_run_execute(run_id=run.pk)
        run = training_run_get(run_id=run.pk)
        self.stdout.write(run.log)
        self.stdout.write(f"Run {run.pk}: {run.status}")
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(run.error or f"run ended {run.status}")
