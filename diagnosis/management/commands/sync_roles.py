"""`manage.py sync_roles`: make the role groups hold exactly the permissions in diagnosis.roles."""

from typing import Any

from django.core.management.base import BaseCommand

from diagnosis.services.accounts import roles_sync


class Command(BaseCommand):
    help = "Create the role groups and set their permissions from diagnosis.roles (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        for role, count in roles_sync().items():
            self.stdout.write(f"{role}: {count} permissions")
