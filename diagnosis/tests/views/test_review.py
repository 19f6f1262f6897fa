"""Review pages: queue (HTML and JSON), claims, the review screen, reads, statistics,
notifications and the clinician's result."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnosis.models import AuditEvent, BodyPart, Case, Label, Notification, Review
from diagnosis.services.reviews import ImageRead, review_claim, review_submit
from diagnosis.tests import factories
from diagnosis.tests.review_helpers import predicted_case

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_queue_counts(settings):
    """Counts computed on every request here (their cache has its own tests)."""
    settings.REVIEW_QUEUE_COUNTS_CACHE_SECONDS = 0


@pytest.fixture(autouse=True)
def _rule(settings):
    settings.SECOND_READ_MODEL_POSITIVE = True
    settings.SECOND_READ_ON_DISAGREEMENT = True
    settings.SECOND_READ_RANDOM_PERCENT = 0.0


def read(case: Case, user, decision: str, **kwargs) -> Case:
    review_claim(case=case, user=user)
    return review_submit(
        case=case,
        user=user,
        reads=[ImageRead(image_id=i.pk, decision=decision, **kwargs) for i in case.images.all()],
    )


def url(name: str, case: Case | None = None) -> str:
    return reverse(name, kwargs={"case_uuid": case.uuid} if case else None)


# --- Queue -----------------------------------------------------------------------------------------------


class TestQueuePage:
    def test_lists_cases_by_priority_with_counts(self, radiologist, client_for):
        low = predicted_case(priority=0.0, probabilities=[0.05])
        high = predicted_case(priority=3.0, probabilities=[0.55])
        response = client_for(radiologist).get(url("review:queue"))
        assert response.status_code == 200
        body = response.content.decode()
        assert body.index(str(high.uuid)[:8]) < body.index(str(low.uuid)[:8])
        assert response.context["counts"]["total"] == 2
        assert response.context["counts"]["first"] == 2
        assert AuditEvent.objects.filter(
            action="review.queue_view", actor_id=radiologist.pk
        ).exists()

    def test_filters(self, radiologist, client_for):
        hand = predicted_case(body_part=BodyPart.HAND)
        leg = predicted_case(body_part=BodyPart.LEG)
        response = client_for(radiologist).get(url("review:queue"), {"body_part": "leg"})
        uuids = [row["uuid"] for row in response.context["rows"]]
        assert uuids == [str(leg.uuid)]
        assert str(hand.uuid) not in uuids
        assert response.context["counts"]["total"] == 1

    def test_json_data(self, radiologist, client_for):
        case = predicted_case(probabilities=[0.3, 0.9], priority=3.0)
        response = client_for(radiologist).get(url("review:queue_data"))
        assert response.status_code == 200
        data = response.json()
        assert data["counts"]["total"] == 1
        row = data["results"][0]
        assert row["uuid"] == str(case.uuid)
        assert row["top_probability"] == pytest.approx(0.9)
        assert row["images"] == 2
        assert row["stage"] == 1
        assert row["review_url"] == url("review:case", case)

    def test_queue_does_not_grow_queries_with_rows(
        self, radiologist, client_for, django_assert_max_num_queries
    ):
        client = client_for(radiologist)
        for _ in range(3):
            predicted_case(probabilities=[0.7, 0.2])
        client.get(url("review:queue"))  # warm caches (permissions, content types)
        with django_assert_max_num_queries(12) as few:
            client.get(url("review:queue"))
        for _ in range(20):
            predicted_case(probabilities=[0.7, 0.2])
        with django_assert_max_num_queries(len(few.captured_queries)):
            response = client.get(url("review:queue"))
        assert len(response.context["rows"]) == 23
        with django_assert_max_num_queries(len(few.captured_queries)):
            client.get(url("review:queue_data"))


# --- Claims and the review screen --------------------------------------------------------------------------


class TestClaimAndScreen:
    def test_claim_opens_review_screen(self, radiologist, client_for):
        case = predicted_case()
        client = client_for(radiologist)
        response = client.post(url("review:claim", case))
        assert response.status_code == 302
        assert response.url == url("review:case", case)
        case.refresh_from_db()
        assert case.claimed_by == radiologist
        page = client.get(url("review:case", case))
        assert page.status_code == 200
        assert page.context["holds_claim"]
        body = page.content.decode()
        assert 'name="decision_' in body
        assert "Save and next" in body
        assert "static/js/viewer.js" in body or "/js/viewer.js" in body
        assert AuditEvent.objects.filter(action="review.view", object_id=str(case.uuid)).exists()

    def test_claim_by_second_radiologist_is_409_with_message(
        self, radiologist, radiologist_b, client_for
    ):
        case = predicted_case()
        client_for(radiologist).post(url("review:claim", case))
        response = client_for(radiologist_b).post(url("review:claim", case))
        assert response.status_code == 409
        assert "rad_a is reading this case" in response.content.decode()
        assert AuditEvent.objects.filter(
            action="review.denied", outcome="denied", actor_id=radiologist_b.pk
        ).exists()
        case.refresh_from_db()
        assert case.claimed_by == radiologist

    def test_review_screen_of_case_claimed_by_other_is_409(
        self, radiologist, radiologist_b, client_for
    ):
        case = predicted_case()
        review_claim(case=case, user=radiologist)
        response = client_for(radiologist_b).get(url("review:case", case))
        assert response.status_code == 409
        assert "rad_a" in response.content.decode()
        response = client_for(radiologist_b).post(
            url("review:submit", case),
            {f"decision_{case.images.get().pk}": "confirm"},
        )
        assert response.status_code == 409
        assert not Review.objects.exists()

    def test_expired_claim_frees_the_case(self, radiologist, radiologist_b, client_for):
        case = predicted_case()
        review_claim(case=case, user=radiologist)
        Case.objects.filter(pk=case.pk).update(claim_expires_at=timezone.now() - timedelta(1))
        assert client_for(radiologist_b).post(url("review:claim", case)).status_code == 302

    def test_submit_saves_read_with_region(self, radiologist, client_for, settings):
        settings.SECOND_READ_MODEL_POSITIVE = False
        settings.SECOND_READ_ON_DISAGREEMENT = False
        case = predicted_case(probabilities=[0.1])
        image = case.images.get()
        client = client_for(radiologist)
        client.post(url("review:claim", case))
        region = {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.25}
        response = client.post(
            url("review:submit", case),
            {
                f"decision_{image.pk}": "correct",
                f"region_{image.pk}": json.dumps(region),
                f"comment_{image.pk}": "cortical break of the distal radius",
            },
        )
        assert response.status_code == 302
        assert response.url == url("review:queue")
        review = Review.objects.get(image=image)
        assert review.decision == "correct"
        assert review.final_label == Label.FRACTURED
        assert review.boxes == [{**region, "origin": "reader"}]  # the one-box form
        case.refresh_from_db()
        assert case.status == Case.Status.REVIEWED

    def test_save_and_next_claims_the_next_case(self, radiologist, client_for):
        first = predicted_case(priority=3.0, probabilities=[0.2])
        second = predicted_case(priority=1.0, probabilities=[0.2])
        client = client_for(radiologist)
        client.post(url("review:claim", first))
        response = client.post(
            url("review:submit", first),
            {f"decision_{first.images.get().pk}": "confirm", "next": "1"},
        )
        assert response.status_code == 302
        assert response.url == url("review:case", second)
        second.refresh_from_db()
        assert second.claimed_by == radiologist

    def test_claim_renewal(self, radiologist, radiologist_b, clinician, client_for):
        case = predicted_case()
        client = client_for(radiologist)
        client.post(url("review:claim", case))
        Case.objects.filter(pk=case.pk).update(claim_expires_at=timezone.now() + timedelta(1 / 24))
        response = client.post(url("review:claim_renew", case))
        assert response.status_code == 200
        case.refresh_from_db()
        assert case.claim_expires_at.isoformat() == response.json()["claim_expires_at"]
        assert AuditEvent.objects.filter(action="review.claim", extra__renewed=True).count() == 1
        # Lapsed and taken by someone else: the screen is told so.
        Case.objects.filter(pk=case.pk).update(claim_expires_at=timezone.now() - timedelta(1))
        review_claim(case=case, user=radiologist_b)
        response = client.post(url("review:claim_renew", case))
        assert response.status_code == 409
        assert "rad_b is reading it" in response.json()["message"]
        assert client_for(clinician).post(url("review:claim_renew", case)).status_code == 403

    def test_claim_next_button(self, radiologist, client_for):
        case = predicted_case(priority=2.0)
        response = client_for(radiologist).post(reverse("review:claim_next"))
        assert response.url == url("review:case", case)

    def test_missing_decision_is_400_and_saves_nothing(self, radiologist, client_for):
        case = predicted_case(probabilities=[0.1, 0.9])
        client = client_for(radiologist)
        client.post(url("review:claim", case))
        first = case.images.order_by("position").first()
        response = client.post(url("review:submit", case), {f"decision_{first.pk}": "confirm"})
        assert response.status_code == 400
        assert not Review.objects.exists()

    def test_bad_region_is_400(self, radiologist, client_for):
        case = predicted_case()
        image = case.images.get()
        client = client_for(radiologist)
        client.post(url("review:claim", case))
        response = client.post(
            url("review:submit", case),
            {f"decision_{image.pk}": "confirm", f"region_{image.pk}": "{not json"},
        )
        assert response.status_code == 400
        assert not Review.objects.exists()

    def test_release(self, radiologist, client_for):
        case = predicted_case()
        client = client_for(radiologist)
        client.post(url("review:claim", case))
        response = client.post(url("review:release", case))
        assert response.status_code == 302
        case.refresh_from_db()
        assert case.status == Case.Status.PREDICTED
        assert case.claimed_by is None

    def test_review_screen_query_count_is_flat(
        self, radiologist, client_for, django_assert_max_num_queries
    ):
        one = predicted_case(probabilities=[0.9])
        many = predicted_case(probabilities=[0.9, 0.1, 0.5, 0.7, 0.3])
        client = client_for(radiologist)
        review_claim(case=one, user=radiologist)
        client.get(url("review:case", one))
        with django_assert_max_num_queries(20) as few:
            client.get(url("review:case", one))
        review_claim(case=many, user=radiologist)
        with django_assert_max_num_queries(len(few.captured_queries)):
            response = client.get(url("review:case", many))
        assert len(response.context["items"]) == 5


def test_reviewed_case_shows_all_reads_read_only(radiologist, radiologist_b, client_for):
    case = predicted_case(probabilities=[0.9])
    read(case, radiologist, "confirm", comment="first comment")
    read(case, radiologist_b, "confirm", comment="second comment")
    response = client_for(factories.RadiologistFactory(username="rad_c")).get(
        url("review:case", case)
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert response.context["stage"] is None
    assert "first comment" in body
    assert "second comment" in body
    assert 'id="review-form"' in body
    assert 'name="decision_' not in body  # nothing to decide any more
    assert "Claim" not in body.split('id="review-form"')[1].split("</form>")[0]


class TestBlindSecondReadAndAdjudication:
    def test_second_reader_does_not_see_the_first_read(
        self, radiologist, radiologist_b, client_for
    ):
        case = predicted_case(probabilities=[0.9])
        review_claim(case=case, user=radiologist)
        review_submit(
            case=case,
            user=radiologist,
            reads=[
                ImageRead(
                    image_id=case.images.get().pk,
                    decision="confirm",
                    region={"x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2},
                    comment="SECRET-FIRST-COMMENT",
                )
            ],
        )
        client = client_for(radiologist_b)
        responses = [client.get(url("review:case", case))]  # before claiming
        client.post(url("review:claim", case))
        responses.append(client.get(url("review:case", case)))  # while holding the claim
        assert responses[1].context["holds_claim"]
        for response in responses:
            assert response.status_code == 200
            body = response.content.decode()
            assert "SECRET-FIRST-COMMENT" not in body
            assert "rad_a" not in body
            assert "data-boxes" not in body
            assert response.context["stage"] == 2
            assert all(not entry["reads"] for entry in response.context["items"])

    def test_first_reader_cannot_open_or_claim_the_second_read(self, radiologist, client_for):
        case = predicted_case(probabilities=[0.9])
        read(case, radiologist, "confirm")
        client = client_for(radiologist)
        page = client.get(url("review:case", case))
        assert page.status_code == 403
        assert "second read needs another radiologist" in page.content.decode()
        assert client.post(url("review:claim", case)).status_code == 403
        queue = client.get(url("review:queue"))
        assert queue.context["counts"]["total"] == 0

    def test_adjudicator_sees_both_reads_and_decides(
        self, radiologist, radiologist_b, admin_user, client_for, django_capture_on_commit_callbacks
    ):
        case = predicted_case(probabilities=[0.9], created_by=factories.ClinicianFactory())
        review_claim(case=case, user=radiologist)
        image = case.images.get()
        review_submit(
            case=case,
            user=radiologist,
            reads=[
                ImageRead(
                    image_id=image.pk,
                    decision="confirm",
                    region={"x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2},
                    comment="first says fracture",
                )
            ],
        )
        read(case, radiologist_b, "correct", comment="second says none")
        client = client_for(admin_user)
        queue = client.get(url("review:queue"))
        assert [row["uuid"] for row in queue.context["rows"]] == [str(case.uuid)]
        assert queue.context["rows"][0]["stage"] == 3
        client.post(url("review:claim", case))
        page = client.get(url("review:case", case))
        body = page.content.decode()
        assert "first says fracture" in body
        assert "second says none" in body
        assert f"Reader {radiologist.pk}" in body  # readers by display name
        assert f"Reader {radiologist_b.pk}" in body
        assert "rad_a" not in body
        # Framed as a choice between the two reads, side by side, not against the model.
        assert 'class="read-choices"' in body
        assert f'name="choice_{image.pk}" value="1"' in body
        assert f'name="choice_{image.pk}" value="2"' in body
        assert f'name="decision_{image.pk}"' not in body
        # A choice is required.
        assert client.post(url("review:submit", case), {}).status_code == 400
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(url("review:submit", case), {f"choice_{image.pk}": "1"})
        assert response.status_code == 302
        case.refresh_from_db()
        assert case.status == Case.Status.REVIEWED
        assert case.final_label == Label.FRACTURED
        assert AuditEvent.objects.filter(action="review.adjudicate").count() == 1
        final = Review.objects.get(image=image, read_number=3)
        assert final.decision == "confirm"  # read 1 agreed with the model
        # read 1's box
        assert final.boxes == [{"x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2, "origin": "reader"}]


# --- Statistics ------------------------------------------------------------------------------------------------


def test_statistics_page(radiologist, radiologist_b, client_for):
    agree = predicted_case(probabilities=[0.9])
    read(agree, radiologist, "confirm")
    read(agree, radiologist_b, "confirm")
    response = client_for(radiologist).get(reverse("review:statistics"))
    assert response.status_code == 200
    overall = response.context["stats"]["rows"][0]
    assert overall["key"] == "all"
    assert overall["reader_pairs"] == 1
    assert overall["confirmed"]["tp"] == 1
    assert overall["confirmed"]["sensitivity"] == 1.0
    assert "Reader statistics" in response.content.decode()


def test_statistics_page_forbidden_for_clinicians(clinician, client_for):
    assert client_for(clinician).get(reverse("review:statistics")).status_code == 403


# --- Notifications and the clinician's view ---------------------------------------------------------------------


class TestClinicianSide:
    def test_reviewed_case_page_shows_result_and_notification(
        self, clinician, radiologist, client_for, settings
    ):
        settings.SECOND_READ_MODEL_POSITIVE = False
        settings.SECOND_READ_ON_DISAGREEMENT = False
        case = predicted_case(probabilities=[0.2], created_by=clinician)
        review_claim(case=case, user=radiologist)
        review_submit(
            case=case,
            user=radiologist,
            reads=[
                ImageRead(
                    image_id=case.images.get().pk,
                    decision="correct",
                    region={"x": 0.25, "y": 0.5, "w": 0.125, "h": 0.25},
                )
            ],
        )
        client = client_for(clinician)
        page = client.get(reverse("diagnosis:case_detail", kwargs={"case_uuid": case.uuid}))
        assert page.status_code == 200
        body = page.content.decode()
        assert 'id="review-result"' in body
        assert 'id="final-label">Fracture<' in body
        assert f"Reader {radiologist.pk}" in body  # the reader by display name...
        assert "rad_a" not in body  # ...never by user name
        assert 'x="0.250000"' in body
        assert 'width="0.125000"' in body
        assert 'id="notification-badge"' in body  # nav badge: one unread

        note = Notification.objects.get(user=clinician)
        listing = client.get(reverse("review:notifications"))
        assert note.message in listing.content.decode()
        response = client.post(reverse("review:notification_read", args=[note.pk]))
        assert response.status_code == 302
        note.refresh_from_db()
        assert note.read_at is not None
        page = client.get(reverse("diagnosis:case_detail", kwargs={"case_uuid": case.uuid}))
        assert 'id="notification-badge"' not in page.content.decode()

    def test_pending_case_shows_waiting(self, clinician, client_for):
        case = predicted_case(created_by=clinician)
        page = client_for(clinician).get(
            reverse("diagnosis:case_detail", kwargs={"case_uuid": case.uuid})
        )
        assert "Waiting for a radiologist" in page.content.decode()

    def test_cannot_mark_someone_elses_notification(self, clinician, clinician_b, client_for):
        note = Notification.objects.create(user=clinician_b, message="x")
        response = client_for(clinician).post(reverse("review:notification_read", args=[note.pk]))
        assert response.status_code == 404
        note.refresh_from_db()
        assert note.read_at is None

    def test_mark_all_read(self, clinician, client_for):
        Notification.objects.create(user=clinician, message="a")
        Notification.objects.create(user=clinician, message="b")
        client_for(clinician).post(reverse("review:notifications_read_all"))
        assert not Notification.objects.filter(user=clinician, read_at__isnull=True).exists()
