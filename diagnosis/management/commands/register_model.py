"""`manage.py register_model [DIR] [--activate] [--version V]`: register a model artifact folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from diagnosis.exceptions import DomainError
from diagnosis.services.models import model_version_register


class Command(BaseCommand):
    help = (
        "Register a model artifact folder (model.keras + card.json) as a ModelVersion after "
        "checking its sha256. Idempotent. Activates it with --activate, or when none is active."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # --version names the model here, replacing Django's "print Django's version" flag.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "artifact_dir",
            nargs="?",
            default=None,
            help="artifact folder (default: settings.FRACTURE_MODEL_DIR, the bundled model)",
        )
        parser.add_argument("--activate", action="store_true", help="make it the active version")
        parser.add_argument("--version", default="", help="version name (default: the card's)")

    def handle(self, *args: Any, **options: Any) -> None:
        artifact_dir = Path(options["artifact_dir"] or settings.FRACTURE_MODEL_DIR)
        try:
            row, created = model_version_register(
                artifact_dir=artifact_dir, version=options["version"], activate=options["activate"]
            )
        except DomainError as exc:
            raise CommandError(f"{artifact_dir}: {exc.message}") from exc
        verb = "registered" if created else "already registered"
        self.stdout.write(f"Model {row.version} {verb} ({row.status}), sha256 {row.sha256[:12]}")
