"""`manage.py rollback_model`: re-activate the previously active model version."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from diagnosis.exceptions import DomainError
from diagnosis.services.models import model_version_rollback


class Command(BaseCommand):
    help = "Re-activate the model version that was active before the current one (audited)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            version = model_version_rollback(user=None)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"{version.version} is active again.")
