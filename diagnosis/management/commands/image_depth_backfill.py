"""`manage.py image_depth_backfill [--limit N]`: full-depth PNGs for images stored before they were
kept, rebuilt from kept originals (KEEP_ORIGINAL_UPLOADS). See services/image_depth.py."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from diagnosis.services.image_depth import image_depth_backfill


class Command(BaseCommand):
    help = "Rebuild missing full-depth PNGs (DICOM, 16-bit PNG) from kept originals."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--limit", type=int, default=None, help="At most this many images.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        report = image_depth_backfill(limit=options["limit"])
        for key, value in report.as_counts().items():
            self.stdout.write(f"{key}: {value}")
        if report.mismatch:
            self.stdout.write(f"left as they are, canonical differs (ids): {report.mismatch[:50]}")
        if report.unreadable:
            self.stdout.write(f"originals missing or unreadable (ids): {report.unreadable[:50]}")
