"""`manage.py unlock_account USERNAME [...]`: lift the sign-in lockout of accounts (audited)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from diagnosis.services.accounts import login_lock_clear


class Command(BaseCommand):
    help = "Clear the failed-login counter and lockout of the named accounts (audited)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("usernames", nargs="+")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        names = list(dict.fromkeys(options["usernames"]))
        users = list(user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__in": names}))
        missing = sorted(set(names) - {user.get_username() for user in users})
        if missing:
            raise CommandError(f"No such account: {', '.join(missing)} (nothing was changed).")
        locked = login_lock_clear(users=users, actor=None)
        self.stdout.write(
            f"Cleared the sign-in lockout of {len(users)} account(s); {locked} were locked."
        )
