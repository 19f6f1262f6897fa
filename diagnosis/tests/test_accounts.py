"""Accounts: sign-in throttling and lockout, passwords, session timeouts, logout, CSRF, headers,
demo accounts and role groups."""

from __future__ import annotations

import io
import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from diagnosis import roles
from diagnosis.models import AuditEvent
from diagnosis.services.accounts import DEMO_ACCOUNTS, user_set_password
from diagnosis.signals import LOGIN_AT_KEY
from diagnosis.tests import factories
from fracture_portal.middleware import IDLE_KEY

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-9"  # factories.UserFactory's password
LOGIN_URL = "/accounts/login/"


@pytest.fixture(autouse=True)
def _empty_cache():
    """Lockout counters live in the (Redis) cache: every test starts without any."""
    cache.clear()
    yield
    cache.clear()


def _login(client: Client, username: str, password: str, ip: str = "10.0.0.1"):
    return client.post(LOGIN_URL, {"username": username, "password": password}, REMOTE_ADDR=ip)


def _actions() -> list[str]:
    return list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))


# --- sign-in ---------------------------------------------------------------------------------------


def test_login_success_redirects_to_cases_and_is_audited_once(clinician):
    response = _login(Client(), "clin_a", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == reverse("diagnosis:case_list")
    event = AuditEvent.objects.get()
    assert (event.action, event.actor_id, event.outcome, event.ip) == (
        "auth.login",
        clinician.pk,
        "success",
        "10.0.0.1",
    )


def test_failed_login_shows_a_generic_error_and_is_audited_once(clinician):
    response = _login(Client(), "clin_a", "wrong-password-123")
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    event = AuditEvent.objects.get()
    assert (event.action, event.actor_id, event.actor_username, event.outcome) == (
        "auth.login_failed",
        None,
        "clin_a",
        "failure",
    )


def test_username_is_locked_after_the_failure_limit(settings, clinician):
    settings.LOGIN_FAILURE_LIMIT = 3
    client = Client()
    for _ in range(2):
        assert b"correct username and password" in _login(client, "clin_a", "nope-nope-123").content
    locking = _login(client, "clin_a", "nope-nope-123")
    assert b"Too many failed sign-in attempts" in locking.content
    # Even the right password is refused while locked, and the refusal is audited.
    blocked = _login(client, "clin_a", PASSWORD)
    assert blocked.status_code == 200
    assert b"Too many failed sign-in attempts" in blocked.content
    assert "_auth_user_id" not in client.session
    assert _actions() == ["auth.login_failed"] * 3 + ["auth.login_blocked"]
    assert AuditEvent.objects.get(action="auth.login_blocked").outcome == "denied"
    # Another account from another address is unaffected.
    factories.ClinicianFactory(username="clin_other")
    assert _login(Client(), "clin_other", PASSWORD, ip="10.0.0.2").status_code == 302


def test_lockout_does_not_reveal_whether_the_account_exists(settings, clinician):
    settings.LOGIN_FAILURE_LIMIT = 2
    bodies = {}
    for username, ip in (("clin_a", "10.0.0.1"), ("no_such_user", "10.0.0.2")):
        client = Client()
        _login(client, username, "nope-nope-123", ip=ip)
        _login(client, username, "nope-nope-123", ip=ip)
        response = _login(client, username, "anything-at-all-1", ip=ip)
        errors = re.search(rb'<div class="errors".*?</div>', response.content, re.S)
        bodies[username] = errors.group(0) if errors else b""
    assert bodies["clin_a"] == bodies["no_such_user"]
    assert b"Too many failed sign-in attempts" in bodies["clin_a"]


def test_client_address_is_locked_after_its_own_limit(settings, clinician):
    settings.LOGIN_FAILURE_LIMIT = 100
    settings.LOGIN_IP_FAILURE_LIMIT = 3
    client = Client()
    for n in range(3):
        _login(client, f"guess{n}", "nope-nope-123", ip="10.9.9.9")
    # A valid account from the same address is refused; from another address it is fine.
    assert (
        b"Too many failed sign-in attempts"
        in _login(client, "clin_a", PASSWORD, "10.9.9.9").content
    )
    assert _login(Client(), "clin_a", PASSWORD, ip="10.9.9.8").status_code == 302


def test_successful_login_resets_the_username_counter(settings, clinician):
    settings.LOGIN_FAILURE_LIMIT = 3
    client = Client()
    _login(client, "clin_a", "nope-nope-123")
    _login(client, "clin_a", "nope-nope-123")
    assert _login(client, "clin_a", PASSWORD).status_code == 302
    client.post(reverse("logout"))
    _login(client, "clin_a", "nope-nope-123")
    _login(client, "clin_a", "nope-nope-123")
    assert _login(client, "clin_a", PASSWORD).status_code == 302


def test_lock_expires_after_the_lockout_period(settings, clinician):
    settings.LOGIN_FAILURE_LIMIT = 1
    settings.LOGIN_LOCKOUT_SECONDS = 1
    client = Client()
    _login(client, "clin_a", "nope-nope-123")
    assert b"Too many failed" in _login(client, "clin_a", PASSWORD).content
    time.sleep(1.2)
    assert _login(client, "clin_a", PASSWORD).status_code == 302


def test_admin_sees_and_lifts_a_lockout_and_it_is_audited(
    settings, clinician, admin_user, client_for
):
    settings.LOGIN_FAILURE_LIMIT = 2
    for _ in range(2):
        _login(Client(), "clin_a", "nope-nope-123", ip="10.0.0.7")
    assert b"Too many failed" in _login(Client(), "clin_a", PASSWORD, ip="10.0.0.7").content
    admin = client_for(admin_user)
    url = reverse("admin:auth_user_changelist")
    page = admin.get(url).content.decode()
    row = re.search(r"<tr>.*?clin_a.*?</tr>", page, re.S).group(0)
    assert 'alt="True"' in row  # the "Sign-in locked" column
    response = admin.post(url, {"action": "unlock_signin", "_selected_action": [clinician.pk]})
    assert response.status_code == 302
    assert _login(Client(), "clin_a", PASSWORD, ip="10.0.0.7").status_code == 302
    event = AuditEvent.objects.get(action="account.unlock")
    assert (event.actor_id, event.object_id, event.extra["was_locked"]) == (
        admin_user.pk,
        str(clinician.pk),
        True,
    )


def test_unlock_needs_the_change_permission_on_accounts(settings, clinician, client_for):
    settings.LOGIN_FAILURE_LIMIT = 1
    _login(Client(), "clin_a", "nope-nope-123")
    viewer = factories.UserFactory(username="auditor", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename="view_user"))
    response = client_for(viewer).post(
        reverse("admin:auth_user_changelist"),
        {"action": "unlock_signin", "_selected_action": [clinician.pk]},
    )
    assert response.status_code in (200, 302)  # the action is not offered: nothing happens
    assert not AuditEvent.objects.filter(action="account.unlock").exists()
    assert b"Too many failed" in _login(Client(), "clin_a", PASSWORD).content


def test_unlock_account_command(settings, clinician):
    settings.LOGIN_FAILURE_LIMIT = 1
    _login(Client(), "clin_a", "nope-nope-123")
    out = io.StringIO()
    call_command("unlock_account", "clin_a", stdout=out)
    assert "1 were locked" in out.getvalue()
    assert _login(Client(), "clin_a", PASSWORD).status_code == 302
    with pytest.raises(CommandError, match="No such account: ghost"):
        call_command("unlock_account", "clin_a", "ghost")
    assert AuditEvent.objects.filter(action="account.unlock").count() == 1


def test_admin_login_goes_through_the_portal_login(clinician, admin_user, client_for):
    response = Client().get("/admin/login/?next=/admin/diagnosis/case/")
    assert response.status_code == 302
    assert response["Location"].startswith(LOGIN_URL)
    assert "next=%2Fadmin%2Fdiagnosis%2Fcase%2F" in response["Location"]
    # Signed in without admin access: 403, not a redirect loop.
    assert client_for(clinician).get("/admin/login/?next=/admin/").status_code == 403
    assert client_for(admin_user).get("/admin/login/").status_code == 302


def test_admin_login_ignores_foreign_next_urls():
    response = Client().get("/admin/login/?next=https://evil.example/")
    assert "evil.example" not in response["Location"]


# --- passwords ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short1A", "too short"),
        ("password1234", "too common"),
        ("839201748392017", "entirely numeric"),
        ("clin_a@example.org", "too similar"),
    ],
)
def test_user_set_password_runs_the_validators(clinician, password, message):
    with pytest.raises(ValidationError, match=message):
        user_set_password(user=clinician, password=password)
    clinician.refresh_from_db()
    assert clinician.check_password(PASSWORD)


def test_user_set_password_stores_a_valid_password(clinician):
    user_set_password(user=clinician, password="Quiet-Harbour-Lantern-42")
    clinician.refresh_from_db()
    assert clinician.check_password("Quiet-Harbour-Lantern-42")
    assert not clinician.check_password(PASSWORD)


def test_password_change_ends_other_sessions(clinician, client_for):
    other = client_for(clinician)
    assert other.get(reverse("diagnosis:case_list")).status_code == 200
    user_set_password(user=clinician, password="Quiet-Harbour-Lantern-42")
    assert other.get(reverse("diagnosis:case_list")).status_code == 302


# --- sessions -------------------------------------------------------------------------------------


def _age_session(client: Client, key: str, seconds: int) -> None:
    session = client.session
    session[key] = int(time.time()) - seconds
    session.save()


def test_idle_session_is_logged_out(settings, clinician, client_for):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 600
    client = client_for(clinician)
    assert client.get(reverse("diagnosis:case_list")).status_code == 200
    _age_session(client, IDLE_KEY, 599 - 30)  # inside the window (and its 30 s resolution)
    assert client.get(reverse("diagnosis:case_list")).status_code == 200
    _age_session(client, IDLE_KEY, 601)
    response = client.get(reverse("diagnosis:case_list"))
    assert response.status_code == 302
    assert response["Location"].startswith(f"{LOGIN_URL}?next=%2F&expired=1")
    assert "_auth_user_id" not in client.session
    logout = AuditEvent.objects.get(action="auth.logout")
    assert logout.extra == {"reason": "idle_timeout"}
    assert b"Your session expired" in client.get(response["Location"]).content


def test_active_session_still_ends_at_the_absolute_timeout(settings, clinician, client_for):
    settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS = 3600
    client = client_for(clinician)
    assert LOGIN_AT_KEY in client.session  # stamped at sign-in
    assert client.get(reverse("diagnosis:case_list")).status_code == 200
    _age_session(client, LOGIN_AT_KEY, 3601)
    response = client.get(reverse("diagnosis:case_list"))
    assert response.status_code == 302
    assert "expired=1" in response["Location"]
    assert AuditEvent.objects.get(action="auth.logout").extra == {"reason": "absolute_timeout"}


def test_logout_invalidates_the_session_server_side(clinician):
    client = Client()
    assert _login(client, "clin_a", PASSWORD).status_code == 302
    stolen = client.cookies["sessionid"].value
    assert client.get(reverse("logout")).status_code == 405  # logout is POST only
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    replay = Client()
    replay.cookies["sessionid"] = stolen
    assert replay.get(reverse("diagnosis:case_list")).status_code == 302
    assert _actions() == ["auth.login", "auth.logout"]


# --- CSRF and headers -----------------------------------------------------------------------------


def test_csrf_is_enforced_on_login_and_logout(clinician):
    client = Client(enforce_csrf_checks=True)
    assert _login(client, "clin_a", PASSWORD).status_code == 403
    page = client.get(LOGIN_URL)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content).group(1)
    response = client.post(
        LOGIN_URL,
        {"username": "clin_a", "password": PASSWORD, "csrfmiddlewaretoken": token.decode()},
    )
    assert response.status_code == 302
    assert client.post(reverse("logout")).status_code == 403  # no token
    assert "_auth_user_id" in client.session


def test_security_headers_on_pages(clinician, client_for):
    for response in (Client().get(LOGIN_URL), client_for(clinician).get("/")):
        assert response.status_code == 200
        csp = response["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["Cross-Origin-Opener-Policy"] == "same-origin"
        assert "camera=()" in response["Permissions-Policy"]


def test_session_cookie_flags(clinician):
    response = _login(Client(), "clin_a", PASSWORD)
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"


# --- demo accounts and roles ----------------------------------------------------------------------


def _demo_passwords(output: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(demo-[\w-]+)\s+(\S+)\s+\(", output, re.M))


def test_demo_setup_creates_one_account_per_role_and_resets_on_rerun(settings, tmp_path):
    settings.FRACTURE_MODEL_DIR = tmp_path / "no-model"
    out = io.StringIO()
    call_command("demo_setup", stdout=out)
    first = _demo_passwords(out.getvalue())
    assert set(first) == {name for name, _, _ in DEMO_ACCOUNTS}
    assert "No bundled model" in out.getvalue()
    user_model = get_user_model()
    for username, role, staff in DEMO_ACCOUNTS:
        user = user_model.objects.get(username=username)
        assert user.check_password(first[username])
        assert [g.name for g in user.groups.all()] == [role]
        assert (user.is_staff, user.is_superuser) == (staff, False)
    clinician = user_model.objects.get(username="demo-clinician")
    assert clinician.has_perm("diagnosis.add_case")
    assert not clinician.has_perm("diagnosis.view_all_cases")
    assert user_model.objects.get(username="demo-radiologist").has_perm("diagnosis.review_case")
    assert user_model.objects.get(username="demo-admin").has_perm("diagnosis.manage_models")

    out = io.StringIO()
    call_command("demo_setup", "--skip-model", stdout=out)
    second = _demo_passwords(out.getvalue())
    assert user_model.objects.filter(username__startswith="demo-").count() == len(DEMO_ACCOUNTS)
    for username in first:
        assert first[username] != second[username]
        user = user_model.objects.get(username=username)
        assert user.check_password(second[username])
        assert not user.check_password(first[username])
    # The printed password signs in through the real login page.
    assert _login(Client(), "demo-clinician", second["demo-clinician"]).status_code == 302


def test_sync_roles_restores_the_role_permissions():
    group = Group.objects.get(name=roles.CLINICIAN)
    group.permissions.clear()
    out = io.StringIO()
    call_command("sync_roles", stdout=out)
    assert f"{roles.CLINICIAN}: {len(roles.ROLE_PERMISSIONS[roles.CLINICIAN])}" in out.getvalue()
    for role, perms in roles.ROLE_PERMISSIONS.items():
        group = Group.objects.get(name=role)
        got = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
        assert got == set(perms)


def test_roles_grant_what_the_design_says(clinician, radiologist, admin_user):
    assert clinician.has_perms(["diagnosis.add_case", "diagnosis.view_case"])
    assert not clinician.has_perm("diagnosis.review_case")
    assert radiologist.has_perms(["diagnosis.view_all_cases", "diagnosis.review_case"])
    assert not radiologist.has_perm("diagnosis.manage_models")
    assert admin_user.has_perms(["diagnosis.manage_models", "auth.change_user"])
    assert not admin_user.has_perm("diagnosis.review_case")


@pytest.mark.slow
def test_demo_setup_registers_and_activates_the_bundled_model_once(settings, tmp_path):
    from diagnosis.models import ModelVersion
    from ml.testing import make_tiny_artifact

    settings.FRACTURE_MODEL_DIR = make_tiny_artifact(tmp_path / "bundled", version="demo-bundled")
    for _ in range(2):  # idempotent: the second run finds the version already registered
        out = io.StringIO()
        call_command("demo_setup", stdout=out)
    assert "Model demo-bundled already registered (active)" in out.getvalue()
    version = ModelVersion.objects.get()
    assert (version.version, version.status) == ("demo-bundled", ModelVersion.Status.ACTIVE)


def test_admin_role_manages_users_but_cannot_mint_or_touch_superusers(admin_user, clinician):
    client = Client()
    client.force_login(admin_user)
    users = client.get("/admin/auth/user/")
    assert users.status_code == 200
    assert b"clinician" in users.content  # the Roles column
    page = client.get(f"/admin/auth/user/{clinician.pk}/change/")
    assert page.status_code == 200
    assert b'name="is_superuser"' not in page.content  # read-only for a non-superuser
    assert b'name="groups"' in page.content
    root = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    assert (
        client.post(f"/admin/auth/user/{root.pk}/change/", {"username": "root"}).status_code == 403
    )
    assert client.get(f"/admin/auth/user/{root.pk}/password/").status_code == 403


def test_login_issues_a_new_session_key(clinician):
    """No session fixation: a key planted before sign-in is not the key after it."""
    client = Client()
    client.get(LOGIN_URL)
    client.cookies["sessionid"] = "attacker-chosen-key-0123456789abcdef"
    assert _login(client, "clin_a", PASSWORD).status_code == 302
    assert client.cookies["sessionid"].value != "attacker-chosen-key-0123456789abcdef"


def test_only_the_password_service_sets_passwords():
    """There is no pre_save guard on users: instead no code outside user_set_password may set a
    password (Django's own forms and commands validate by themselves)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(path.relative_to(root))
        for package in ("diagnosis", "fracture_portal", "ml")
        for path in (root / package).rglob("*.py")
        if "tests" not in path.parts
        and path != root / "diagnosis" / "services" / "accounts.py"
        and re.search(r"\.set_password\(|make_password\(", path.read_text())
    ]
    assert offenders == []


def test_demo_setup_registers_the_shipped_model(settings):
    """What `make run` does on a fresh clone, with the model card as shipped (no TensorFlow)."""
    from diagnosis.models import ModelVersion

    shipped = settings.BASE_DIR / "ml" / "weights" / "locate-256-v1"
    settings.FRACTURE_MODEL_DIR = shipped
    out = io.StringIO()
    call_command("demo_setup", stdout=out)
    version = ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE)
    assert f"Model {version.version} registered (active)" in out.getvalue()
    assert version.thresholds.keys() >= {"balanced", "high_sensitivity"}
