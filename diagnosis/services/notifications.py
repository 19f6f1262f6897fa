"""In-app notifications and the e-mail that goes with them.

E-mails carry no clinical content (no label, no patient reference): only that a case changed and a
link to it, so a mailbox never holds PHI.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from diagnosis.exceptions import NotFoundError
from diagnosis.models import Case, Label, Notification

logger = logging.getLogger(__name__)


def notification_create(
    *, user: AbstractBaseUser, message: str, case: Case | None = None
) -> Notification:
    notification = Notification(user=user, case=case, message=message[:300])
    notification.full_clean(exclude=["user", "case"])
    notification.save()
    return notification


def _case_url(case: Case) -> str:
    path = reverse("diagnosis:case_detail", kwargs={"case_uuid": case.uuid})
    return f"{settings.PORTAL_BASE_URL.rstrip('/')}{path}"


@transaction.atomic
def notification_case_reviewed(*, case: Case) -> Notification:
    """Tell the case's creator that the review is done: an in-app notification now, an e-mail
    (when the account has an address) after the transaction commits."""
    short = str(case.uuid)[:8]
    label = _label_display(case.final_label)
    notification = notification_create(
        user=case.created_by,
        case=case,
        message=f"Case {short} has been reviewed: {label}.",
    )
    recipient = case.created_by.email
    if recipient:
        subject = f"Fracture Portal: case {short} has been reviewed"
        body = (
            f"A radiologist has finished reviewing case {short}.\n\n"
            f"Sign in to see the result: {_case_url(case)}\n"
        )
        case_pk, user_pk = case.pk, case.created_by_id

        def send() -> None:
            try:
                send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [recipient])
            except Exception:  # a mail outage must not undo or fail the review
                logger.exception(
                    "review e-mail failed", extra={"case_id": case_pk, "user_id": user_pk}
                )

        transaction.on_commit(send)
    return notification


def notification_security(*, user: AbstractBaseUser, message: str) -> Notification:
    """Tell a user about their account's security (e.g. a sign-in lockout): an in-app notification
    now, the same text by e-mail (when the account has an address) after the transaction commits.
    `message` carries no clinical content."""
    notification = notification_create(user=user, message=message)
    recipient = getattr(user, "email", "")
    if recipient:
        user_pk = user.pk

        def send() -> None:
            try:
                send_mail(
                    "Fracture Portal: sign-in to your account",
                    f"{message}\n",
                    settings.DEFAULT_FROM_EMAIL,
                    [recipient],
                )
            except Exception:  # a mail outage must not fail the sign-in attempt
                logger.exception("security e-mail failed", extra={"user_id": user_pk})

        transaction.on_commit(send)
    return notification


def _label_display(value: str) -> str:
    try:
        return str(Label(value).label)
    except ValueError:
        return value or "no label"


def notification_mark_read(*, user: AbstractBaseUser, notification_id: int) -> Notification:
    """Mark one of the user's notifications read; someone else's answers NotFoundError."""
    try:
        notification = Notification.objects.get(pk=notification_id, user=user)
    except Notification.DoesNotExist as exc:
        raise NotFoundError("Notification not found.") from exc
    if notification.read_at is None:
        notification.read_at = timezone.now()
        notification.save(update_fields=["read_at"])
    return notification


def notification_mark_all_read(*, user: AbstractBaseUser) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).update(
        read_at=timezone.now()
    )
