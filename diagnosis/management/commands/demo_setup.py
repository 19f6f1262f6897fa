"""`manage.py demo_setup`: demo accounts (one per role) and the bundled model, for `make run`.

Idempotent: re-running resets the demo passwords (printed once, stored nowhere) and registers the
bundled model again, which `register_model` treats as a no-op when it is already registered.
"""

from typing import Any

from django.conf import settings
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand

from diagnosis.services.accounts import demo_accounts_setup


class Command(BaseCommand):
    help = "Create or reset one demo account per role and register the bundled model."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--skip-model", action="store_true", help="Do not register the bundled model."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        accounts = demo_accounts_setup()
        width = max(len(a.username) for a in accounts)
        self.stdout.write("Demo accounts (passwords are shown only now; re-run to reset):")
        for account in accounts:
            self.stdout.write(
                f"  {account.username:<{width}}  {account.password}  ({account.role})"
            )
        if options["skip_model"]:
            return
        self._register_bundled_model()

    def _register_bundled_model(self) -> None:
        model_dir = settings.FRACTURE_MODEL_DIR
        if not (model_dir / "card.json").exists():
            self.stdout.write(f"No bundled model at {model_dir}: predictions stay queued.")
            return
        if "register_model" not in get_commands():
            self.stdout.write("The register_model command is not available: model not registered.")
            return
        call_command("register_model", str(model_dir), stdout=self.stdout, stderr=self.stderr)
