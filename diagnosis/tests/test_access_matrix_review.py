"""The access matrix extended to the review workflow: queue, claims, reads, statistics and
notifications, for every actor; plus the claim and reader rules that depend on who else read."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from diagnosis.models import Case, Notification, Review
from diagnosis.services.reviews import ImageRead, review_claim, review_submit
from diagnosis.tests import factories
from diagnosis.tests.test_access_matrix import (
    Endpoint,
    World,
    check_endpoint,
    everyone,
    matrix_params,
    world,  # noqa: F401 - the shared fixture
)

QUEUE_USERS = {"anonymous": 302, "owner": 403, "other_clinician": 403}


@pytest.fixture(autouse=True)
def _fresh_queue_counts(settings):
    """Counts computed on every request here (their cache has its own tests)."""
    settings.REVIEW_QUEUE_COUNTS_CACHE_SECONDS = 0


def _case(name: str):
    return lambda w: reverse(name, kwargs={"case_uuid": w.case.uuid})


def _claimed_only_by_radiologist(w: World, actor: str, response: Any) -> None:
    w.case.refresh_from_db()
    if actor == "radiologist":
        assert w.case.claimed_by == w.users["radiologist"]
    else:
        assert w.case.claimed_by is None
        assert w.case.status == Case.Status.PREDICTED


def _no_read_saved(w: World, actor: str, response: Any) -> None:
    assert not Review.objects.exists()
    w.case.refresh_from_db()
    assert w.case.status == Case.Status.PREDICTED


def _owner_notification(w: World) -> str:
    note = Notification.objects.create(user=w.users["owner"], case=w.case, message="Reviewed.")
    return reverse("review:notification_read", args=[note.pk])


def _read_only_by_owner(w: World, actor: str, response: Any) -> None:
    note = Notification.objects.get(user=w.users["owner"])
    assert (note.read_at is not None) is (actor == "owner")


def _decision(w: World) -> dict[str, str]:
    return {f"decision_{w.image.pk}": "confirm"}


REVIEW_ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "review_queue",
        "get",
        lambda w: reverse("review:queue"),
        {**QUEUE_USERS, "radiologist": 200, "admin": 200},
    ),
    Endpoint("review_queue", "post", lambda w: reverse("review:queue"), everyone(405)),
    Endpoint(
        "review_queue_data",
        "get",
        lambda w: reverse("review:queue_data"),
        {**QUEUE_USERS, "radiologist": 200, "admin": 200},
    ),
    # A first read: radiologists only (admins adjudicate, they do not read first).
    Endpoint(
        "review_case",
        "get",
        _case("review:case"),
        {**QUEUE_USERS, "radiologist": 200, "admin": 403},
    ),
    Endpoint("review_case", "post", _case("review:case"), everyone(405)),
    Endpoint(
        "review_claim",
        "post",
        _case("review:claim"),
        {**QUEUE_USERS, "radiologist": 302, "admin": 403},
        check=_claimed_only_by_radiologist,
    ),
    Endpoint("review_claim", "get", _case("review:claim"), everyone(405)),
    # Without a claim nobody may save a read.
    Endpoint(
        "review_submit",
        "post",
        _case("review:submit"),
        {**QUEUE_USERS, "radiologist": 409, "admin": 403},
        data=_decision,
        check=_no_read_saved,
    ),
    Endpoint(
        "review_claim_renew",
        "post",
        _case("review:claim_renew"),
        {**QUEUE_USERS, "radiologist": 409, "admin": 409},
    ),
    Endpoint("review_claim_renew", "get", _case("review:claim_renew"), everyone(405)),
    Endpoint(
        "review_release",
        "post",
        _case("review:release"),
        {**QUEUE_USERS, "radiologist": 409, "admin": 409},
    ),
    Endpoint(
        "review_claim_next",
        "post",
        lambda w: reverse("review:claim_next"),
        {**QUEUE_USERS, "radiologist": 302, "admin": 302},
    ),
    Endpoint(
        "review_statistics",
        "get",
        lambda w: reverse("review:statistics"),
        {**QUEUE_USERS, "radiologist": 200, "admin": 200},
    ),
    Endpoint("notifications", "get", lambda w: reverse("review:notifications"), everyone(200)),
    Endpoint(
        "notification_read",
        "post",
        _owner_notification,
        everyone(404, anonymous=302, owner=302),
        check=_read_only_by_owner,
    ),
    Endpoint(
        "notifications_read_all",
        "post",
        lambda w: reverse("review:notifications_read_all"),
        everyone(302),
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("endpoint", "actor"), matrix_params(REVIEW_ENDPOINTS))
def test_review_access_matrix(world, endpoint, actor):  # noqa: F811
    check_endpoint(world, endpoint, actor)


# --- Rules that depend on other readers ---------------------------------------------------------------


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def _no_random(settings):
    settings.SECOND_READ_MODEL_POSITIVE = True
    settings.SECOND_READ_ON_DISAGREEMENT = True
    settings.SECOND_READ_RANDOM_PERCENT = 0.0


@pytest.mark.django_db
@pytest.mark.usefixtures("_no_random")
class TestReaderRules:
    def test_case_claimed_by_another_is_409_everywhere(self, world, radiologist_b):  # noqa: F811
        review_claim(case=world.case, user=radiologist_b)
        client = _client(world.users["radiologist"])
        for method, name, data in (
            ("get", "review:case", {}),
            ("post", "review:claim", {}),
            ("post", "review:submit", {f"decision_{world.image.pk}": "confirm"}),
            ("post", "review:release", {}),
        ):
            response = getattr(client, method)(
                reverse(name, kwargs={"case_uuid": world.case.uuid}), data
            )
            assert response.status_code == 409, name
        body = client.get(reverse("review:case", kwargs={"case_uuid": world.case.uuid}))
        assert "rad_b is reading this case" in body.content.decode()
        assert not Review.objects.exists()
        world.case.refresh_from_db()
        assert world.case.claimed_by == radiologist_b

    def test_expired_claim_of_another_does_not_block(self, world, radiologist_b):  # noqa: F811
        review_claim(case=world.case, user=radiologist_b)
        Case.objects.filter(pk=world.case.pk).update(
            claim_expires_at=timezone.now() - timedelta(seconds=1)
        )
        client = _client(world.users["radiologist"])
        url = reverse("review:claim", kwargs={"case_uuid": world.case.uuid})
        assert client.post(url).status_code == 302

    def test_second_reader_cannot_be_the_first_reader(self, world):  # noqa: F811
        radiologist = world.users["radiologist"]
        review_claim(case=world.case, user=radiologist)
        review_submit(
            case=world.case,
            user=radiologist,
            reads=[ImageRead(image_id=world.image.pk, decision="confirm")],  # model positive
        )
        world.case.refresh_from_db()
        assert world.case.needs_second_read
        client = _client(radiologist)
        url = reverse("review:claim", kwargs={"case_uuid": world.case.uuid})
        response = client.post(url)
        assert response.status_code == 403
        assert "second read needs another radiologist" in response.content.decode()
        other = factories.RadiologistFactory(username="rad_second")
        assert _client(other).post(url).status_code == 302

    def test_unknown_case_is_404(self, world):  # noqa: F811
        client = _client(world.users["radiologist"])
        for name in ("review:case",):
            url = reverse(name, kwargs={"case_uuid": "00000000-0000-4000-8000-000000000000"})
            assert client.get(url).status_code == 404
        url = reverse("review:claim", kwargs={"case_uuid": "00000000-0000-4000-8000-000000000000"})
        assert client.post(url).status_code == 404
