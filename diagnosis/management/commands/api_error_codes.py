"""`manage.py api_error_codes [--write docs/api.md]`: print the API's error-code table as
Markdown, or rewrite the list between the error-code markers of a document."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from diagnosis.error_codes import docs_with_error_codes, error_codes_markdown


class Command(BaseCommand):
    help = "Print the API error codes (Markdown) or write them into docs/api.md."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--write", metavar="PATH", help="Rewrite the marked block of PATH.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["write"]:
            self.stdout.write(error_codes_markdown(), ending="")
            return
        path = Path(options["write"])
        try:
            path.write_text(docs_with_error_codes(path.read_text()))
        except (OSError, ValueError) as exc:
            raise CommandError(f"{path}: {exc}") from exc
        self.stdout.write(f"{path}: error codes written")
