"""Review queue selector (who sees what, in which order) and the statistics functions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from diagnosis.models import BodyPart, Case, Label, Review
from diagnosis.selectors.reviews import (
    STAGE_ADJUDICATION,
    STAGE_FIRST,
    STAGE_SECOND,
    QueueFilters,
    case_review_stage,
    cohen_kappa,
    cohen_kappa_counts,
    review_queue,
    review_queue_counts,
    review_queue_rows,
    review_statistics,
    sensitivity_specificity,
    sensitivity_specificity_counts,
)
from diagnosis.tests import factories
from diagnosis.tests.review_helpers import predicted_case

F, N = Label.FRACTURED.value, Label.NOT_FRACTURED.value


@pytest.fixture(autouse=True)
def _fresh_queue_counts(settings):
    """Counts computed on every request here (their cache has its own tests)."""
    settings.REVIEW_QUEUE_COUNTS_CACHE_SECONDS = 0


def queue_uuids(user, **filters) -> list[str]:
    return [str(c.uuid) for c in review_queue(user=user, filters=QueueFilters(**filters))]


def add_read(case: Case, reviewer, read_number: int, label: str) -> None:
    """A read written directly (as review_submit would record it, readers included)."""
    field = {1: "first_reader", 2: "second_reader"}.get(read_number)
    if field:
        Case.objects.filter(pk=case.pk).update(**{field: reviewer})
    for image in case.images.all():
        Review.objects.create(
            image=image,
            prediction=image.predictions.first(),
            reviewer=reviewer,
            read_number=read_number,
            decision="confirm",
            final_label=label,
        )


@pytest.mark.django_db
class TestQueue:
    def test_orders_by_priority_then_waiting_time(self, radiologist):
        old_low = predicted_case(priority=0.0)
        new_high = predicted_case(priority=3.0)
        old_high = predicted_case(priority=3.0)
        Case.objects.filter(pk=old_high.pk).update(created_at=timezone.now() - timedelta(hours=2))
        Case.objects.filter(pk=old_low.pk).update(created_at=timezone.now() - timedelta(hours=5))
        assert queue_uuids(radiologist) == [
            str(old_high.uuid),
            str(new_high.uuid),
            str(old_low.uuid),
        ]

    def test_only_cases_waiting_for_review(self, radiologist):
        waiting = predicted_case()
        for status in ("received", "queued", "predicting", "reviewed", "failed", "cancelled"):
            predicted_case(status=status)
        assert queue_uuids(radiologist) == [str(waiting.uuid)]

    def test_clinician_has_no_queue(self, clinician):
        predicted_case()
        assert queue_uuids(clinician) == []
        assert review_queue_counts(user=clinician)["total"] == 0

    def test_claims(self, radiologist, radiologist_b):
        mine = predicted_case(status=Case.Status.IN_REVIEW)
        theirs = predicted_case(status=Case.Status.IN_REVIEW)
        expired = predicted_case(status=Case.Status.IN_REVIEW)
        now = timezone.now()
        Case.objects.filter(pk=mine.pk).update(
            claimed_by=radiologist, claim_expires_at=now + timedelta(minutes=5)
        )
        Case.objects.filter(pk=theirs.pk).update(
            claimed_by=radiologist_b, claim_expires_at=now + timedelta(minutes=5)
        )
        Case.objects.filter(pk=expired.pk).update(
            claimed_by=radiologist_b, claim_expires_at=now - timedelta(minutes=1)
        )
        assert set(queue_uuids(radiologist)) == {str(mine.uuid), str(expired.uuid)}
        counts = review_queue_counts(user=radiologist)
        assert counts["total"] == 2
        assert counts["mine"] == 1

    def test_second_read_hidden_from_first_reader(self, radiologist, radiologist_b):
        case = predicted_case(status=Case.Status.IN_REVIEW)
        Case.objects.filter(pk=case.pk).update(needs_second_read=True)
        add_read(case, radiologist, 1, F)
        assert queue_uuids(radiologist) == []
        assert queue_uuids(radiologist_b) == [str(case.uuid)]
        assert review_queue_counts(user=radiologist_b)["second"] == 1

    def test_adjudication_only_for_third_reader_or_admin(
        self, radiologist, radiologist_b, admin_user
    ):
        third = factories.RadiologistFactory(username="rad_c")
        case = predicted_case(status=Case.Status.IN_REVIEW)
        Case.objects.filter(pk=case.pk).update(needs_second_read=True, needs_adjudication=True)
        add_read(case, radiologist, 1, F)
        add_read(case, radiologist_b, 2, N)
        first_read = predicted_case()  # a first read: admins do not read, they adjudicate
        assert queue_uuids(radiologist) == [str(first_read.uuid)]
        assert queue_uuids(radiologist_b) == [str(first_read.uuid)]
        assert set(queue_uuids(third)) == {str(case.uuid), str(first_read.uuid)}
        assert queue_uuids(admin_user) == [str(case.uuid)]
        counts = review_queue_counts(user=admin_user)
        assert counts == {"total": 1, "first": 0, "second": 0, "adjudication": 1, "mine": 0}

    def test_filters(self, radiologist):
        other_version = factories.ModelVersionFactory(status="retired")
        hand = predicted_case(body_part=BodyPart.HAND)
        leg = predicted_case(body_part=BodyPart.LEG, model_version=other_version)
        in_review = predicted_case(status=Case.Status.IN_REVIEW)
        second = predicted_case(status=Case.Status.IN_REVIEW)
        Case.objects.filter(pk=second.pk).update(needs_second_read=True)
        assert str(leg.uuid) in queue_uuids(radiologist, body_part="leg")
        assert str(hand.uuid) not in queue_uuids(radiologist, body_part="leg")
        assert queue_uuids(radiologist, model_version=other_version.pk) == [str(leg.uuid)]
        assert set(queue_uuids(radiologist, status="in_review")) == {
            str(in_review.uuid),
            str(second.uuid),
        }
        assert queue_uuids(radiologist, stage=2) == [str(second.uuid)]

    def test_rows_carry_top_probability(self, radiologist):
        predicted_case(probabilities=[0.2, 0.85, None])
        [row] = review_queue_rows(review_queue(user=radiologist))
        assert row.top_probability == pytest.approx(0.85)
        assert row.image_count == 3

    def test_filters_from_params_ignore_garbage(self):
        filters = QueueFilters.from_params(
            {"body_part": "brain", "status": "reviewed", "model_version": "1; drop", "stage": "9"}
        )
        assert filters == QueueFilters()
        filters = QueueFilters.from_params({"body_part": "hip", "stage": "3", "model_version": "7"})
        assert filters == QueueFilters(body_part="hip", stage=3, model_version=7)


@pytest.mark.django_db
def test_case_review_stage():
    case = factories.CaseFactory(status=Case.Status.PREDICTED)
    assert case_review_stage(case) == STAGE_FIRST
    case.status = Case.Status.IN_REVIEW
    assert case_review_stage(case) == STAGE_FIRST
    case.needs_second_read = True
    assert case_review_stage(case) == STAGE_SECOND
    case.needs_adjudication = True
    assert case_review_stage(case) == STAGE_ADJUDICATION
    case.status = Case.Status.REVIEWED
    assert case_review_stage(case) is None


# --- Statistics: pure functions against hand-computed values ------------------------------------------


class TestCohenKappa:
    def test_textbook_example(self):
        # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
        # p_o = 35/50 = 0.7; p_e = (25*30 + 25*20) / 50**2 = 0.5; kappa = 0.2 / 0.5 = 0.4
        pairs = [(F, F)] * 20 + [(F, N)] * 5 + [(N, F)] * 10 + [(N, N)] * 15
        assert cohen_kappa(pairs) == pytest.approx(0.4)

    def test_second_textbook_example(self):
        # 100 items: 45 / 15 / 25 / 15: p_o = 0.6; p_e = 0.6*0.7 + 0.4*0.3 = 0.54;
        # kappa = 0.06 / 0.46 = 0.130434...
        pairs = [(F, F)] * 45 + [(F, N)] * 15 + [(N, F)] * 25 + [(N, N)] * 15
        assert cohen_kappa(pairs) == pytest.approx(0.06 / 0.46)

    def test_from_a_contingency_table(self):
        table = {(F, F): 20, (F, N): 5, (N, F): 10, (N, N): 15}
        assert cohen_kappa_counts(table) == pytest.approx(0.4)
        assert sensitivity_specificity_counts(table)["sensitivity"] == pytest.approx(20 / 30)

    def test_perfect_and_opposite(self):
        assert cohen_kappa([(F, F), (N, N)]) == pytest.approx(1.0)
        assert cohen_kappa([(F, N), (N, F)]) == pytest.approx(-1.0)

    def test_undefined(self):
        assert cohen_kappa([]) is None
        assert cohen_kappa([(F, F), (F, F)]) is None  # one category only: chance agreement is 1


class TestSensitivitySpecificity:
    def test_hand_computed(self):
        # (model, truth): TP 8, FN 2, TN 15, FP 5 -> sensitivity 0.8, specificity 0.75
        pairs = [(F, F)] * 8 + [(N, F)] * 2 + [(N, N)] * 15 + [(F, N)] * 5
        result = sensitivity_specificity(pairs)
        assert (result["tp"], result["fn"], result["tn"], result["fp"]) == (8, 2, 15, 5)
        assert result["sensitivity"] == pytest.approx(0.8)
        assert result["specificity"] == pytest.approx(0.75)
        assert result["n"] == 30

    def test_undefined_rates(self):
        result = sensitivity_specificity([(F, N)])
        assert result["sensitivity"] is None
        assert result["specificity"] == 0.0


@pytest.mark.django_db
def test_review_statistics_per_body_part(radiologist, radiologist_b, admin_user):
    """Four reviewed hand images and two leg images, with hand-computed figures."""

    def case_with(part, probability, reads, status=Case.Status.REVIEWED):
        case = predicted_case(body_part=part, probabilities=[probability], status=status)
        for number, (reader, label) in enumerate(reads, start=1):
            add_read(case, reader, number, label)
        return case

    # Hand: model labels F, F, N, N (threshold 0.5).
    case_with(BodyPart.HAND, 0.9, [(radiologist, F), (radiologist_b, F)])  # agree F
    case_with(BodyPart.HAND, 0.8, [(radiologist, F), (radiologist_b, N), (admin_user, N)])
    case_with(BodyPart.HAND, 0.2, [(radiologist, N)])  # single read
    case_with(BodyPart.HAND, 0.1, [(radiologist, F), (radiologist_b, F)])
    # Leg: one reviewed (model N, truth N), one still waiting for its second read.
    case_with(BodyPart.LEG, 0.3, [(radiologist, N)])
    case_with(BodyPart.LEG, 0.7, [(radiologist, F)], status=Case.Status.IN_REVIEW)

    stats = review_statistics()
    rows = {row["key"]: row for row in stats["rows"]}
    hand = rows["hand"]
    # Readers (first vs second): (F,F), (F,N), (F,F) -> p_o = 2/3; first reader all F, second
    # F 2 / N 1 -> p_e = (3*2 + 0*1)/9 = 2/3, so kappa = 0 (agreement no better than chance).
    assert hand["reader_pairs"] == 3
    assert hand["reader_kappa"] == pytest.approx(0.0)
    # Model vs reads 1 and 2: (F,F) (F,F) | (F,F) (F,N) | (N,N) | (N,F) (N,F): 7 pairs,
    # agree 4 -> p_o = 4/7; model F 4, N 3; readers F 5, N 2 -> p_e = (4*5 + 3*2)/49 = 26/49
    assert hand["model_reader_pairs"] == 7
    assert hand["model_reader_kappa"] == pytest.approx((4 / 7 - 26 / 49) / (1 - 26 / 49))
    # Confirmed (deciding read): truths F, N, N, F vs model F, F, N, N: TP 1, FP 1, TN 1, FN 1.
    assert hand["confirmed"]["tp"] == 1
    assert hand["confirmed"]["fp"] == 1
    assert hand["confirmed"]["tn"] == 1
    assert hand["confirmed"]["fn"] == 1
    assert hand["confirmed"]["sensitivity"] == pytest.approx(0.5)
    leg = rows["leg"]
    assert leg["confirmed"]["n"] == 1  # the case still in review is not confirmed
    assert leg["confirmed"]["specificity"] == pytest.approx(1.0)
    assert leg["confirmed"]["sensitivity"] is None
    assert rows["all"]["confirmed"]["n"] == 5
    only_leg = review_statistics(body_part="leg")
    assert [row["key"] for row in only_leg["rows"]] == ["all", "leg"]


@pytest.mark.django_db
class TestCountsCache:
    @pytest.fixture(autouse=True)
    def _cache_on(self, settings):
        from django.core.cache import cache

        cache.clear()
        settings.REVIEW_QUEUE_COUNTS_CACHE_SECONDS = 60

    def test_counts_are_cached_per_user_and_filters(
        self, radiologist, radiologist_b, django_assert_num_queries
    ):
        predicted_case(body_part=BodyPart.HAND)
        assert review_queue_counts(user=radiologist)["total"] == 1
        predicted_case(body_part=BodyPart.HAND)
        with django_assert_num_queries(0):
            assert review_queue_counts(user=radiologist)["total"] == 1  # within the TTL
        assert review_queue_counts(user=radiologist, cached=False)["total"] == 2
        assert review_queue_counts(user=radiologist_b)["total"] == 2  # another reader
        filtered = review_queue_counts(user=radiologist, filters=QueueFilters(body_part="hand"))
        assert filtered["total"] == 2  # other filters, other entry

    def test_own_claim_drops_the_cached_counts(
        self, radiologist, django_capture_on_commit_callbacks
    ):
        from diagnosis.services.reviews import review_claim

        case = predicted_case()
        assert review_queue_counts(user=radiologist)["mine"] == 0
        with django_capture_on_commit_callbacks(execute=True):
            review_claim(case=case, user=radiologist)
        assert review_queue_counts(user=radiologist)["mine"] == 1

    def test_zero_seconds_disables_the_cache(self, radiologist, settings):
        settings.REVIEW_QUEUE_COUNTS_CACHE_SECONDS = 0
        predicted_case()
        assert review_queue_counts(user=radiologist)["total"] == 1
        predicted_case()
        assert review_queue_counts(user=radiologist)["total"] == 2
