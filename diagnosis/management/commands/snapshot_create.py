"""`manage.py snapshot_create [--base DIR | --no-base]`: freeze reviewed images into a snapshot."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from diagnosis.exceptions import DomainError
from diagnosis.services.datasets import snapshot_create


class Command(BaseCommand):
    help = (
        "Freeze the reviewed images (plus the base dataset folder) into a dataset snapshot with a "
        "group-aware split; the test split of the first snapshot stays frozen in later ones."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--base",
            default=None,
            help="base dataset folder (split/label/*.jpg + manifest.csv); default: the previous "
            "snapshot's, else settings.TRAINING_BASE_DATASET_DIR",
        )
        group.add_argument("--no-base", action="store_true", help="reviewed images only")

    def handle(self, *args: Any, **options: Any) -> None:
        base = "" if options["no_base"] else options["base"]
        try:
            snapshot = snapshot_create(base_dir=base)
        except (DomainError, OSError) as exc:
            raise CommandError(getattr(exc, "message", str(exc))) from exc
        counts = snapshot.counts
        self.stdout.write(f"Snapshot {snapshot.version} (id {snapshot.pk})")
        for split in ("train", "val", "test"):
            c = counts.get(split, {})
            self.stdout.write(
                f"  {split:5s} {c.get('total', 0):6d} images, {c.get('fractured', 0)} fractured"
            )
        if counts.get("excluded"):
            self.stdout.write(f"  left out: {counts['excluded']}")
