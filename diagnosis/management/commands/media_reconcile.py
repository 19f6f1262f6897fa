"""`manage.py media_reconcile [--fix] [--grace-seconds N]`: square media files with their rows.

Reports (and with --fix removes) files without rows, publishes files staged by a committed upload
whose process died before moving them, and flags rows without files. See services/media.py.
"""

from typing import Any

from django.core.management.base import BaseCommand

from diagnosis.services.media import media_reconcile


class Command(BaseCommand):
    help = "Report (--fix: remove) media files without rows; flag rows without files."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--fix", action="store_true", help="Remove orphans, publish staged.")
        parser.add_argument(
            "--grace-seconds",
            type=int,
            default=None,
            help="Files younger than this are left alone (default MEDIA_RECONCILE_GRACE_SECONDS).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = media_reconcile(fix=options["fix"], grace_seconds=options["grace_seconds"])
        for key, value in report.as_counts().items():
            self.stdout.write(f"{key}: {value}")
        if report.images_missing:
            self.stdout.write(f"images without files (ids): {report.images_missing[:50]}")
        if report.heatmaps_missing:
            self.stdout.write(
                f"heat-maps without files (prediction ids): {report.heatmaps_missing[:50]}"
            )
