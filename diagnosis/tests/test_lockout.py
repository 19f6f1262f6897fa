"""Sign-in lockout that cannot be used as a weapon (issue #13, point 5), and sign-in while the cache
Redis is down (issue #12, point 2): through the real login page, with the real cache, and with the
cache pointed at a closed port."""

from __future__ import annotations

import time

import pytest
from django.core import mail
from django.core.cache import cache
from django.test import Client, override_settings
from django.urls import reverse

from diagnosis.models import AuditEvent, Notification
from diagnosis.services.accounts import CACHE_ERRORS, login_lock_clear, login_locked_usernames
from diagnosis.tests import factories

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-9"  # factories.UserFactory's password
WRONG = "nope-nope-123"
ATTACKER, OWNER, OTHER = "203.0.113.9", "10.0.0.1", "198.51.100.7"
LOCKED = b"Too many failed sign-in attempts"
# A Redis nobody listens on: connections are refused at once.
DEAD_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def dead_cache():
    """The cache pointed at a closed port for the test (restored before the cache is cleared)."""
    with override_settings(CACHES=DEAD_CACHE):
        yield


@pytest.fixture
def radiologist_on_duty(db):
    return factories.RadiologistFactory(username="rad_night", email="rad_night@example.org")


def _login(username: str, password: str, ip: str, client: Client | None = None):
    client = client or Client()
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip
    )


def test_lockout_follows_the_source_not_the_account(settings, radiologist_on_duty):
    """Failed guesses from one address lock that address out of the account, never the owner
    signing in from elsewhere (before: any address locked the username everywhere)."""
    settings.LOGIN_FAILURE_LIMIT = 3
    for _ in range(3):
        _login("rad_night", WRONG, ATTACKER)
    assert LOCKED in _login("rad_night", PASSWORD, ATTACKER).content
    assert _login("rad_night", PASSWORD, OWNER).status_code == 302


def test_many_addresses_only_slow_the_username_down(settings, radiologist_on_duty):
    """The all-address back-off: every LOGIN_USER_FAILURE_LIMIT failures pause the username
    everywhere for a short, doubling time."""
    settings.LOGIN_FAILURE_LIMIT = 2
    settings.LOGIN_USER_FAILURE_LIMIT = 4
    settings.LOGIN_USER_BACKOFF_SECONDS = 1
    for ip in ("192.0.2.1", "192.0.2.2"):
        for _ in range(2):
            _login("rad_night", WRONG, ip)
    assert LOCKED in _login("rad_night", PASSWORD, OWNER).content  # paused everywhere...
    time.sleep(1.2)
    assert _login("rad_night", PASSWORD, OWNER).status_code == 302  # ...for a second only


def test_the_owner_is_told_once_per_lockout(
    settings, radiologist_on_duty, django_capture_on_commit_callbacks
):
    settings.LOGIN_FAILURE_LIMIT = 2
    with django_capture_on_commit_callbacks(execute=True):  # the e-mail goes after commit
        for _ in range(2):
            _login("rad_night", WRONG, ATTACKER)
        for _ in range(2):
            _login("rad_night", WRONG, OTHER)  # a second address locked: no second message
    (note,) = Notification.objects.filter(user=radiologist_on_duty)
    assert ATTACKER in note.message
    assert "your other devices are not" in note.message
    (message,) = mail.outbox
    assert message.to == ["rad_night@example.org"]
    assert ATTACKER in message.body
    # Guessing a username that does not exist tells nobody anything.
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):
            _login("no_such_user", WRONG, ATTACKER)
    assert Notification.objects.count() == 1
    assert len(mail.outbox) == 1


def test_admins_see_and_lift_every_lock_of_an_account(settings, radiologist_on_duty, admin_user):
    settings.LOGIN_FAILURE_LIMIT = 2
    for _ in range(2):
        _login("rad_night", WRONG, ATTACKER)
    assert login_locked_usernames(usernames=["rad_night", "other"]) == {"rad_night"}
    assert login_lock_clear(users=[radiologist_on_duty], actor=admin_user) == 1
    assert login_locked_usernames(usernames=["rad_night"]) == set()
    assert _login("rad_night", PASSWORD, ATTACKER).status_code == 302


# --- the cache Redis is down -------------------------------------------------------------------


def test_sign_in_works_while_the_cache_is_down(dead_cache, radiologist_on_duty):
    with pytest.raises(CACHE_ERRORS):
        cache.get("probe")  # the cache really is unreachable
    client = Client()
    response = _login("rad_night", PASSWORD, OWNER, client)
    assert response.status_code == 302
    assert client.get(response["Location"]).status_code == 200  # signed in: the queue page
    assert AuditEvent.objects.filter(action="auth.login", actor_id=radiologist_on_duty.pk).exists()


def test_lockout_still_holds_from_the_audit_trail_while_the_cache_is_down(
    dead_cache, settings, radiologist_on_duty, admin_user
):
    settings.LOGIN_FAILURE_LIMIT = 3
    for _ in range(2):
        assert _login("rad_night", WRONG, ATTACKER).status_code == 200
    assert LOCKED in _login("rad_night", WRONG, ATTACKER).content  # the third failure locks
    assert LOCKED in _login("rad_night", PASSWORD, ATTACKER).content
    assert _login("rad_night", PASSWORD, OWNER).status_code == 302  # still per address
    # The owner is told, and an administrator's unlock restarts the count.
    assert Notification.objects.filter(user=radiologist_on_duty).count() == 1
    assert login_locked_usernames(usernames=["rad_night"]) == {"rad_night"}
    login_lock_clear(users=[radiologist_on_duty], actor=admin_user)
    assert _login("rad_night", PASSWORD, ATTACKER).status_code == 302


def test_a_guessing_address_is_locked_while_the_cache_is_down(
    dead_cache, settings, radiologist_on_duty
):
    settings.LOGIN_FAILURE_LIMIT = 100
    settings.LOGIN_IP_FAILURE_LIMIT = 3
    for n in range(3):
        _login(f"guess{n}", WRONG, ATTACKER)
    assert LOCKED in _login("rad_night", PASSWORD, ATTACKER).content
    assert _login("rad_night", PASSWORD, OWNER).status_code == 302
