"""Review workflow services: priority, second-read rule, claims, reads, adjudication."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from unittest.mock import patch

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from diagnosis.exceptions import InvalidStateError
from diagnosis.models import AuditEvent, Case, Label, Notification, Review
from diagnosis.services import reviews
from diagnosis.services.case_progress import case_priority
from diagnosis.services.reviews import (
    ClaimedByOtherError,
    ClaimRequiredError,
    ImageRead,
    InvalidReadError,
    NotYourReadError,
    SameReaderError,
    region_clean,
    review_claim,
    review_claim_next,
    review_release,
    review_submit,
    second_read_draw,
    second_read_reasons,
)
from diagnosis.tests import factories
from diagnosis.tests.review_helpers import predicted_case

CONFIRM, CORRECT = Review.Decision.CONFIRM, Review.Decision.CORRECT


@pytest.fixture(autouse=True)
def _no_random_second_reads(settings):
    """Deterministic rule for these tests: model-positive and disagreement only."""
    settings.SECOND_READ_MODEL_POSITIVE = True
    settings.SECOND_READ_ON_DISAGREEMENT = True
    settings.SECOND_READ_RANDOM_PERCENT = 0.0


def reads_for(case: Case, decision: str, **kwargs) -> list[ImageRead]:
    return [ImageRead(image_id=i.pk, decision=decision, **kwargs) for i in case.images.all()]


def read_case(case: Case, user, decision: str, **kwargs) -> Case:
    review_claim(case=case, user=user)
    return review_submit(case=case, user=user, reads=reads_for(case, decision, **kwargs))


# --- Priority ------------------------------------------------------------------------------------------


class TestCasePriority:
    def test_buckets(self):
        assert case_priority(probabilities=[0.05], threshold=0.5) == 0.0  # confident negative
        assert case_priority(probabilities=[0.40], threshold=0.5) == 1.0  # uncertain negative
        assert case_priority(probabilities=[0.55], threshold=0.5) == 3.0  # uncertain positive
        assert case_priority(probabilities=[0.95], threshold=0.5) == 2.0  # confident positive
        assert case_priority(probabilities=[0.95], threshold=0.5, urgent=True) == 6.0

    def test_order_puts_suspected_and_uncertain_first(self):
        probs = {"neg": 0.02, "unsure_neg": 0.45, "pos": 0.97, "unsure_pos": 0.52}
        ranked = sorted(
            probs, key=lambda k: -case_priority(probabilities=[probs[k]], threshold=0.5)
        )
        assert ranked == ["unsure_pos", "pos", "unsure_neg", "neg"]

    def test_several_images_any_positive_counts(self):
        assert case_priority(probabilities=[0.01, 0.99], threshold=0.5) == 2.0

    def test_no_usable_prediction_is_uncertain(self):
        assert case_priority(probabilities=[None], threshold=0.5) == 1.0
        assert case_priority(probabilities=[], threshold=0.5, urgent=True) == 5.0


# --- Second-read rule ----------------------------------------------------------------------------------


class TestSecondReadRule:
    rule = {"model_positive": True, "disagreement": True, "random_percent": 0, "seed": "s"}

    def test_draw_is_deterministic_and_in_range(self):
        key = uuid.UUID("12345678-1234-5678-1234-567812345678")
        first = second_read_draw(key, seed="s")
        assert first == second_read_draw(key, seed="s")
        assert 0.0 <= first < 100.0
        assert first != second_read_draw(key, seed="other-seed")

    def test_draw_selects_about_the_percentage(self):
        keys = [uuid.UUID(int=n) for n in range(4000)]
        share = sum(second_read_draw(k, seed="s") < 10.0 for k in keys) / len(keys)
        assert 0.08 < share < 0.12

    def test_reasons(self):
        case_uuid = uuid.uuid4()
        assert second_read_reasons(
            case_uuid=case_uuid, model_positive=True, disagreement=False, rule=self.rule
        ) == ["model_positive"]
        assert second_read_reasons(
            case_uuid=case_uuid, model_positive=False, disagreement=True, rule=self.rule
        ) == ["model_reader_disagreement"]
        assert (
            second_read_reasons(
                case_uuid=case_uuid, model_positive=False, disagreement=False, rule=self.rule
            )
            == []
        )
        off = {**self.rule, "model_positive": False, "disagreement": False}
        assert (
            second_read_reasons(
                case_uuid=case_uuid, model_positive=True, disagreement=True, rule=off
            )
            == []
        )

    def test_random_percentage_hundred_always_samples(self):
        rule = {**self.rule, "random_percent": 100.0}
        assert second_read_reasons(
            case_uuid=uuid.uuid4(), model_positive=False, disagreement=False, rule=rule
        ) == ["random_sample"]


# --- Region -------------------------------------------------------------------------------------------------


class TestRegion:
    def test_valid_box_is_kept(self):
        assert region_clean({"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}) == {
            "x": 0.1,
            "y": 0.2,
            "w": 0.3,
            "h": 0.4,
        }

    def test_empty_is_none(self):
        assert region_clean(None) is None
        assert region_clean("") is None

    @pytest.mark.parametrize(
        "box",
        [
            {"x": 0.5, "y": 0.5, "w": 0.6, "h": 0.1},  # beyond the right edge
            {"x": 0.1, "y": 0.1, "w": 0.0, "h": 0.1},  # empty
            {"x": -0.2, "y": 0.1, "w": 0.1, "h": 0.1},
            {"x": "a", "y": 0.1, "w": 0.1, "h": 0.1},
            {"x": float("nan"), "y": 0.1, "w": 0.1, "h": 0.1},
            {"x": 0.1, "y": 0.1, "w": 0.1},
            [0.1, 0.1, 0.1, 0.1],
        ],
    )
    def test_invalid_box_is_rejected(self, box):
        with pytest.raises(InvalidReadError):
            region_clean(box)


# --- Claims -------------------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestClaims:
    def test_claim_locks_case_for_the_ttl(self, radiologist, settings):
        settings.REVIEW_CLAIM_TTL_SECONDS = 600
        case = predicted_case()
        before = timezone.now()
        claimed = review_claim(case=case, user=radiologist)
        claimed.refresh_from_db()
        assert claimed.status == Case.Status.IN_REVIEW
        assert claimed.claimed_by == radiologist
        assert timedelta(seconds=590) < claimed.claim_expires_at - before < timedelta(seconds=610)
        event = AuditEvent.objects.get(action="review.claim")
        assert event.actor_id == radiologist.pk
        assert event.object_id == str(case.uuid)
        assert event.extra["read_number"] == 1

    def test_second_radiologist_cannot_claim_while_claim_is_active(
        self, radiologist, radiologist_b
    ):
        case = predicted_case()
        review_claim(case=case, user=radiologist)
        with pytest.raises(ClaimedByOtherError) as exc:
            review_claim(case=case, user=radiologist_b)
        assert exc.value.status_code == 409
        assert "rad_a" in exc.value.message

    def test_expired_claim_can_be_taken(self, radiologist, radiologist_b):
        case = predicted_case()
        review_claim(case=case, user=radiologist)
        Case.objects.filter(pk=case.pk).update(
            claim_expires_at=timezone.now() - timedelta(seconds=1)
        )
        taken = review_claim(case=case, user=radiologist_b)
        assert taken.claimed_by == radiologist_b

    def test_reclaim_renews_own_claim(self, radiologist):
        case = predicted_case()
        first = review_claim(case=case, user=radiologist).claim_expires_at
        second = review_claim(case=case, user=radiologist).claim_expires_at
        assert second >= first
        assert AuditEvent.objects.filter(action="review.claim").count() == 2

    def test_clinician_cannot_claim(self, clinician):
        case = predicted_case()
        with pytest.raises(NotYourReadError):
            review_claim(case=case, user=clinician)

    def test_case_not_waiting_cannot_be_claimed(self, radiologist):
        case = factories.CaseFactory(status=Case.Status.QUEUED)
        with pytest.raises(InvalidStateError):
            review_claim(case=case, user=radiologist)

    def test_release_returns_case_to_queue(self, radiologist):
        case = predicted_case()
        review_claim(case=case, user=radiologist)
        released = review_release(case=case, user=radiologist)
        released.refresh_from_db()
        assert released.status == Case.Status.PREDICTED
        assert released.claimed_by is None
        assert AuditEvent.objects.filter(action="review.release").count() == 1

    def test_release_by_non_holder_is_refused(self, radiologist, radiologist_b):
        case = predicted_case()
        review_claim(case=case, user=radiologist)
        with pytest.raises(ClaimRequiredError):
            review_release(case=case, user=radiologist_b)

    def test_claim_next_takes_highest_priority(self, radiologist, radiologist_b):
        low = predicted_case(priority=0.0)
        high = predicted_case(priority=3.0)
        taken_by_b = predicted_case(priority=6.0)
        review_claim(case=taken_by_b, user=radiologist_b)
        claimed = review_claim_next(user=radiologist)
        assert claimed.pk == high.pk
        assert review_claim_next(user=radiologist).pk == high.pk  # own claim first
        assert low.pk != claimed.pk


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_one_wins(radiologist, radiologist_b):
    """Two readers claim the same case at the same moment: the row lock lets exactly one win."""
    case = predicted_case()
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def claim(user) -> None:
        try:
            barrier.wait(timeout=10)
            review_claim(case=case, user=user)
            outcomes[user.username] = "won"
        except ClaimedByOtherError:
            outcomes[user.username] = "conflict"
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(u,)) for u in (radiologist, radiologist_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes.values()) == ["conflict", "won"]
    case.refresh_from_db()
    assert outcomes[case.claimed_by.username] == "won"


# --- Reads --------------------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestFirstRead:
    def test_confirmed_negative_finishes_the_case(
        self, radiologist, clinician, django_capture_on_commit_callbacks
    ):
        clinician.email = "clin@example.org"
        clinician.save()
        case = predicted_case(probabilities=[0.1, 0.2], created_by=clinician)
        review_claim(case=case, user=radiologist)
        with (
            patch.object(reviews, "webhook_notify") as notify,
            django_capture_on_commit_callbacks(execute=True),
        ):
            done = review_submit(case=case, user=radiologist, reads=reads_for(case, CONFIRM))
        done.refresh_from_db()
        assert done.status == Case.Status.REVIEWED
        assert done.final_label == Label.NOT_FRACTURED
        assert done.reviewed_at is not None
        assert done.claimed_by is None
        assert not done.needs_second_read
        assert Review.objects.filter(image__case=case, read_number=1).count() == 2
        review = Review.objects.filter(image__case=case).first()
        assert review.prediction is not None
        assert review.started_at is not None
        notify.assert_called_once()
        assert notify.call_args.kwargs["event"] == "case.reviewed"
        assert notify.call_args.kwargs["case"].pk == case.pk
        note = Notification.objects.get(user=clinician)
        assert note.case_id == case.pk
        assert len(mail.outbox) == 1
        assert mail.outbox[0].to == ["clin@example.org"]
        assert case.patient_ref not in mail.outbox[0].body  # no PHI in mailboxes
        assert AuditEvent.objects.filter(action="review.submit", object_id=str(case.uuid)).exists()

    def test_webhook_waits_for_commit(self, radiologist, django_capture_on_commit_callbacks):
        case = predicted_case(probabilities=[0.1])
        review_claim(case=case, user=radiologist)
        with patch.object(reviews, "webhook_notify") as notify:
            with django_capture_on_commit_callbacks() as callbacks:
                review_submit(case=case, user=radiologist, reads=reads_for(case, CONFIRM))
            notify.assert_not_called()
            assert callbacks
            for callback in callbacks:
                callback()
        notify.assert_called_once()

    def test_model_positive_goes_to_second_read(self, radiologist):
        case = predicted_case(probabilities=[0.9])
        done = read_case(case, radiologist, CONFIRM)
        done.refresh_from_db()
        assert done.status == Case.Status.IN_REVIEW
        assert done.needs_second_read
        assert done.claimed_by is None
        assert done.final_label == ""
        event = AuditEvent.objects.get(action="review.submit")
        assert event.extra["second_read_reasons"] == ["model_positive"]

    def test_reader_disagreeing_with_model_goes_to_second_read(self, radiologist, settings):
        settings.SECOND_READ_MODEL_POSITIVE = False
        case = predicted_case(probabilities=[0.1])
        done = read_case(case, radiologist, CORRECT)
        assert done.needs_second_read
        assert Review.objects.get(image__case=case).final_label == Label.FRACTURED

    def test_rule_switched_off_finishes_at_first_read(self, radiologist, settings):
        settings.SECOND_READ_MODEL_POSITIVE = False
        settings.SECOND_READ_ON_DISAGREEMENT = False
        case = predicted_case(probabilities=[0.9])
        done = read_case(case, radiologist, CORRECT)
        assert done.status == Case.Status.REVIEWED
        assert done.final_label == Label.NOT_FRACTURED

    def test_random_sample(self, radiologist, settings):
        settings.SECOND_READ_MODEL_POSITIVE = False
        settings.SECOND_READ_RANDOM_PERCENT = 100.0
        case = predicted_case(probabilities=[0.1])
        assert read_case(case, radiologist, CONFIRM).needs_second_read

    def test_region_and_comment_are_stored(self, radiologist):
        case = predicted_case(probabilities=[0.9])
        review_claim(case=case, user=radiologist)
        image = case.images.get()
        review_submit(
            case=case,
            user=radiologist,
            reads=[
                ImageRead(
                    image_id=image.pk,
                    decision=CONFIRM,
                    region={"x": 0.25, "y": 0.5, "w": 0.1, "h": 0.2},
                    comment="distal radius",
                )
            ],
        )
        review = Review.objects.get(image=image)
        # the older one-box form is kept as one box drawn by the reader
        assert review.boxes == [{"x": 0.25, "y": 0.5, "w": 0.1, "h": 0.2, "origin": "reader"}]
        assert review.comment == "distal radius"
        assert review.decision == CONFIRM
        assert review.final_label == Label.FRACTURED

    def test_submit_without_claim_is_refused(self, radiologist):
        case = predicted_case()
        with pytest.raises(ClaimRequiredError):
            review_submit(case=case, user=radiologist, reads=reads_for(case, CONFIRM))
        assert not Review.objects.exists()

    def test_submit_on_case_claimed_by_other_is_refused(self, radiologist, radiologist_b):
        case = predicted_case()
        review_claim(case=case, user=radiologist_b)
        with pytest.raises(ClaimedByOtherError):
            review_submit(case=case, user=radiologist, reads=reads_for(case, CONFIRM))
        assert not Review.objects.exists()

    def test_every_image_needs_a_decision(self, radiologist):
        case = predicted_case(probabilities=[0.1, 0.2])
        review_claim(case=case, user=radiologist)
        first = case.images.first()
        with pytest.raises(InvalidReadError):
            review_submit(
                case=case, user=radiologist, reads=[ImageRead(image_id=first.pk, decision=CONFIRM)]
            )
        assert not Review.objects.exists()

    def test_decision_and_label_must_agree(self, radiologist):
        case = predicted_case(probabilities=[0.9])
        review_claim(case=case, user=radiologist)
        with pytest.raises(InvalidReadError):
            review_submit(
                case=case,
                user=radiologist,
                reads=reads_for(case, CONFIRM, final_label=Label.NOT_FRACTURED),
            )

    def test_image_without_prediction_needs_a_label(self, radiologist):
        case = predicted_case(probabilities=[None])
        review_claim(case=case, user=radiologist)
        with pytest.raises(InvalidReadError):
            review_submit(case=case, user=radiologist, reads=reads_for(case, CONFIRM))
        done = review_submit(
            case=case,
            user=radiologist,
            reads=reads_for(case, CORRECT, final_label=Label.NOT_FRACTURED),
        )
        assert done.status == Case.Status.REVIEWED

    def test_double_submit_is_refused(self, radiologist):
        case = predicted_case(probabilities=[0.1])
        read_case(case, radiologist, CONFIRM)  # finishes the case
        with pytest.raises(InvalidStateError):
            review_submit(case=case, user=radiologist, reads=reads_for(case, CONFIRM))
        assert Review.objects.count() == 1

    def test_double_submit_into_second_read_is_refused(self, radiologist):
        case = predicted_case(probabilities=[0.9])
        read_case(case, radiologist, CONFIRM)  # goes on to a second read
        with pytest.raises(SameReaderError):
            review_submit(case=case, user=radiologist, reads=reads_for(case, CONFIRM))
        assert Review.objects.count() == 1


@pytest.mark.django_db
class TestSecondReadAndAdjudication:
    def test_first_reader_cannot_do_the_second_read(self, radiologist):
        case = predicted_case(probabilities=[0.9])
        read_case(case, radiologist, CONFIRM)
        with pytest.raises(SameReaderError) as exc:
            review_claim(case=case, user=radiologist)
        assert exc.value.status_code == 403

    def test_agreeing_second_read_finishes(self, radiologist, radiologist_b):
        case = predicted_case(probabilities=[0.9])
        read_case(case, radiologist, CONFIRM)
        done = read_case(case, radiologist_b, CONFIRM)
        assert done.status == Case.Status.REVIEWED
        assert done.final_label == Label.FRACTURED
        done.refresh_from_db()
        assert (done.first_reader, done.second_reader) == (radiologist, radiologist_b)
        assert not done.needs_adjudication
        assert set(Review.objects.values_list("read_number", flat=True)) == {1, 2}

    def test_disagreement_goes_to_adjudication_then_adjudicator_decides(
        self, radiologist, radiologist_b, admin_user, django_capture_on_commit_callbacks
    ):
        case = predicted_case(probabilities=[0.9, 0.1])
        read_case(case, radiologist, CONFIRM)
        second = read_case(case, radiologist_b, CORRECT)
        assert second.status == Case.Status.IN_REVIEW
        assert second.needs_adjudication
        assert AuditEvent.objects.filter(action="review.submit").count() == 2

        # Neither reader may adjudicate.
        for reader in (radiologist, radiologist_b):
            with pytest.raises(SameReaderError):
                review_claim(case=case, user=reader)

        review_claim(case=case, user=admin_user)
        image_a, image_b = case.images.order_by("position")
        with (
            patch.object(reviews, "webhook_notify") as notify,
            django_capture_on_commit_callbacks(execute=True),
        ):
            done = review_submit(
                case=case,
                user=admin_user,
                reads=[
                    ImageRead(image_id=image_a.pk, decision=CORRECT),  # not fractured
                    ImageRead(image_id=image_b.pk, decision=CONFIRM),  # not fractured
                ],
            )
        assert done.status == Case.Status.REVIEWED
        assert done.final_label == Label.NOT_FRACTURED
        assert Review.objects.filter(read_number=3).count() == 2
        assert AuditEvent.objects.filter(action="review.adjudicate").count() == 1
        notify.assert_called_once()

    def test_radiologist_without_adjudicate_permission_cannot_adjudicate(
        self, radiologist, radiologist_b
    ):
        from django.contrib.auth.models import Permission

        third = factories.RadiologistFactory(username="rad_c")
        third.groups.clear()
        third.user_permissions.add(Permission.objects.get(codename="review_case"))
        case = predicted_case(probabilities=[0.9])
        read_case(case, radiologist, CONFIRM)
        read_case(case, radiologist_b, CORRECT)
        third = type(third).objects.get(pk=third.pk)  # fresh permission cache
        with pytest.raises(NotYourReadError):
            review_claim(case=case, user=third)

    def test_third_radiologist_can_adjudicate(self, radiologist, radiologist_b):
        third = factories.RadiologistFactory(username="rad_c")
        case = predicted_case(probabilities=[0.9])
        read_case(case, radiologist, CONFIRM)
        read_case(case, radiologist_b, CORRECT)
        done = read_case(case, third, CONFIRM)
        assert done.final_label == Label.FRACTURED
        assert done.status == Case.Status.REVIEWED
