"""Several fracture boxes per read: validation, storage with their origin, the older one-box
form, the refusal on a "No fracture" read (reads and drafts), and the final boxes of an image."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from diagnosis.models import BoxOrigin, Label, Review, ReviewDraft
from diagnosis.selectors.reviews import candidate_fractions, case_image_reads
from diagnosis.services.review_drafts import review_draft_save
from diagnosis.services.reviews import (
    MAX_BOXES,
    ImageRead,
    InvalidReadError,
    box_clean,
    boxes_clean,
    review_claim,
    review_submit,
)
from diagnosis.tests import factories
from diagnosis.tests.review_helpers import predicted_case

CONFIRM, CORRECT = Review.Decision.CONFIRM, Review.Decision.CORRECT
A = {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.1}
B = {"x": 0.5, "y": 0.5, "w": 0.05, "h": 0.08}


@pytest.fixture(autouse=True)
def _rule(settings):
    settings.SECOND_READ_MODEL_POSITIVE = True
    settings.SECOND_READ_ON_DISAGREEMENT = True
    settings.SECOND_READ_RANDOM_PERCENT = 0.0


def submit(case, user, **read):
    review_claim(case=case, user=user)
    image = case.images.get()
    return review_submit(case=case, user=user, reads=[ImageRead(image_id=image.pk, **read)])


class TestBoxesClean:
    def test_origin_defaults_to_reader(self):
        assert box_clean(A) == {**A, "origin": "reader"}

    def test_every_origin_is_kept(self):
        for origin in BoxOrigin.values:
            assert box_clean({**B, "origin": origin})["origin"] == origin

    def test_empty_forms_are_no_boxes(self):
        assert boxes_clean(None) == []
        assert boxes_clean([]) == []
        assert boxes_clean("") == []

    def test_region_is_one_reader_box(self):
        assert boxes_clean(None, region=A) == [{**A, "origin": "reader"}]

    @pytest.mark.parametrize(
        ("boxes", "words"),
        [
            ({"x": 0.1}, "list"),
            ([{**A, "origin": "robot"}], "origin"),
            ([{**A, "colour": "red"}], "Unknown box field"),
            ([{"x": 0.9, "y": 0.1, "w": 0.2, "h": 0.1}], "inside the image"),
            ([{"x": 0.1, "y": 0.1, "w": 0, "h": 0.1}], "positive width"),
            ([{"x": "left", "y": 0.1, "w": 0.1, "h": 0.1}], "numbers"),
            ([[0.1, 0.1, 0.2, 0.2]], "fractions"),
            ([A] * (MAX_BOXES + 1), f"At most {MAX_BOXES}"),
        ],
    )
    def test_bad_boxes_are_refused_in_words(self, boxes, words):
        with pytest.raises(InvalidReadError, match=words):
            boxes_clean(boxes)

    def test_boxes_and_region_together_are_refused(self):
        with pytest.raises(InvalidReadError, match="not both"):
            boxes_clean([A], region=B)


class TestReadBoxes:
    def test_several_boxes_are_stored_in_order_with_their_origin(self, radiologist):
        case = predicted_case(probabilities=[0.9])
        boxes = [
            {**A, "origin": BoxOrigin.MODEL_ACCEPTED},
            {**B, "origin": BoxOrigin.MODEL_MOVED},
            {"x": 0.7, "y": 0.7, "w": 0.1, "h": 0.1},
        ]
        submit(case, radiologist, decision=CONFIRM, boxes=boxes)
        review = Review.objects.get()
        assert review.boxes == [
            {**A, "origin": "model_accepted"},
            {**B, "origin": "model_moved"},
            {"x": 0.7, "y": 0.7, "w": 0.1, "h": 0.1, "origin": "reader"},
        ]

    def test_a_fracture_read_without_boxes_is_allowed(self, radiologist):
        case = predicted_case(probabilities=[0.9])
        submit(case, radiologist, decision=CONFIRM)
        assert Review.objects.get().boxes == []

    @pytest.mark.parametrize("form", ["boxes", "region"])
    def test_box_on_no_fracture_read_is_refused_and_nothing_saved(self, radiologist, form):
        case = predicted_case(probabilities=[0.9])
        given = {"boxes": [A]} if form == "boxes" else {"region": A}
        with pytest.raises(InvalidReadError, match="A box marks a fracture"):
            submit(case, radiologist, decision=CORRECT, **given)
        assert not Review.objects.exists()
        case.refresh_from_db()
        assert case.claimed_by_id == radiologist.pk  # the claim is kept: the reader fixes it

    def test_bad_box_names_the_image(self, radiologist):
        case = predicted_case(probabilities=[0.9])
        with pytest.raises(InvalidReadError) as caught:
            submit(case, radiologist, decision=CONFIRM, boxes=[{**A, "w": 2}])
        assert caught.value.extra["image_id"] == case.images.get().pk


class TestFinalBoxes:
    def test_second_reader_without_boxes_keeps_the_first_readers(self, radiologist, radiologist_b):
        case = predicted_case(probabilities=[0.9])
        submit(case, radiologist, decision=CONFIRM, boxes=[A, B])
        submit(case, radiologist_b, decision=CONFIRM)
        (item,) = case_image_reads(case=case)
        assert [(b["x"], b["y"]) for b in item.final_boxes()] == [(0.1, 0.2), (0.5, 0.5)]

    def test_second_readers_boxes_win(self, radiologist, radiologist_b):
        case = predicted_case(probabilities=[0.9])
        submit(case, radiologist, decision=CONFIRM, boxes=[A, B])
        submit(case, radiologist_b, decision=CONFIRM, boxes=[B])
        (item,) = case_image_reads(case=case)
        assert item.final_boxes() == [{**B, "origin": "reader"}]

    def test_no_fracture_final_has_no_boxes(self, radiologist):
        case = predicted_case(probabilities=[0.2])
        submit(case, radiologist, decision=CONFIRM)
        (item,) = case_image_reads(case=case)
        assert item.final_read().final_label == Label.NOT_FRACTURED
        assert item.final_boxes() == []


class TestDraftBoxes:
    def test_draft_keeps_several_boxes(self, radiologist):
        case = predicted_case(probabilities=[0.9])
        review_claim(case=case, user=radiologist)
        key = str(case.images.get().pk)
        boxes = [{**A, "origin": "model_accepted"}, B]
        draft = review_draft_save(
            case=case, user=radiologist, data={key: {"decision": "confirm", "boxes": boxes}}
        )
        assert draft.data[key]["boxes"] == [
            {**A, "origin": "model_accepted"},
            {**B, "origin": "reader"},
        ]

    def test_undecided_draft_keeps_boxes(self, radiologist):
        case = predicted_case(probabilities=[0.2])
        review_claim(case=case, user=radiologist)
        key = str(case.images.get().pk)
        draft = review_draft_save(case=case, user=radiologist, data={key: {"boxes": [A]}})
        assert len(draft.data[key]["boxes"]) == 1

    def test_older_region_draft_becomes_one_box(self, radiologist):
        case = predicted_case(probabilities=[0.9])
        review_claim(case=case, user=radiologist)
        key = str(case.images.get().pk)
        draft = review_draft_save(case=case, user=radiologist, data={key: {"region": A}})
        assert draft.data[key]["boxes"] == [{**A, "origin": "reader"}]
        assert "region" not in draft.data[key]

    @pytest.mark.parametrize(
        ("probability", "entry"),
        [
            (0.9, {"decision": "correct"}),  # model fracture, corrected: no fracture
            (0.2, {"decision": "confirm"}),  # model no fracture, confirmed
            (None, {"final_label": "not_fractured"}),  # no model result
        ],
    )
    def test_draft_box_on_no_fracture_is_refused(self, radiologist, probability, entry):
        case = predicted_case(probabilities=[probability])
        review_claim(case=case, user=radiologist)
        key = str(case.images.get().pk)
        with pytest.raises(InvalidReadError, match="A box marks a fracture"):
            review_draft_save(case=case, user=radiologist, data={key: {**entry, "boxes": [A]}})
        assert not ReviewDraft.objects.exists()


class TestCandidateFractions:
    def test_pixels_become_fractions_best_first_and_bad_ones_are_dropped(self):
        image = factories.XrayImageFactory.build(width=400, height=200)
        locator = factories.ModelVersionFactory.build(card={"localisation": {"output": "loc"}})
        prediction = factories.PredictionFactory.build(
            image=image,
            model_version=locator,
            status="done",
            candidates=[
                {"x0": 40, "y0": 20, "x1": 80, "y1": 60, "score": 0.81234},
                {"x0": 10, "y0": 10, "x1": 10, "y1": 30, "score": 0.5},  # empty
                {"x0": "a", "y0": 0, "x1": 1, "y1": 1, "score": 0.4},  # malformed
                {"x0": 380, "y0": 180, "x1": 420, "y1": 220, "score": 0.3},  # clipped
            ],
        )
        assert candidate_fractions(prediction, image) == [
            {"x": 0.1, "y": 0.1, "w": 0.1, "h": 0.2, "score": 0.8123, "rank": 1},
            {"x": 0.95, "y": 0.9, "w": 0.05, "h": 0.1, "score": 0.3, "rank": 2},
        ]
        assert candidate_fractions(None, image) == []
        # a classifier-only version marks nothing, whatever the row holds; so does an unfinished one
        prediction.model_version = factories.ModelVersionFactory.build(card={})
        assert candidate_fractions(prediction, image) == []
        prediction.model_version, prediction.status = locator, "running"
        assert candidate_fractions(prediction, image) == []


@pytest.mark.django_db(transaction=True)
class TestMigration:
    """0009 turns each stored region into one box drawn by the reader (reads and drafts), and
    back when reversed."""

    def test_regions_become_boxes_and_back(self, radiologist):
        before = [("diagnosis", "0008_review_draft")]
        after = [("diagnosis", "0009_review_boxes")]
        case = predicted_case(probabilities=[0.9, 0.9])
        first, second = case.images.order_by("position")
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        try:
            old = executor.loader.project_state(before).apps
            old_review = old.get_model("diagnosis", "Review")
            old_draft = old.get_model("diagnosis", "ReviewDraft")
            for image, region in ((first, A), (second, None)):
                old_review.objects.create(
                    image_id=image.pk,
                    reviewer_id=radiologist.pk,
                    read_number=1,
                    decision="confirm",
                    final_label="fractured",
                    region=region,
                )
            old_draft.objects.create(
                case_id=case.pk,
                reviewer_id=radiologist.pk,
                read_number=2,
                data={str(first.pk): {"decision": "confirm", "region": A, "comment": ""}},
            )
            executor = MigrationExecutor(connection)
            executor.migrate(after)
            new = executor.loader.project_state(after).apps
            new_review = new.get_model("diagnosis", "Review")
            new_draft = new.get_model("diagnosis", "ReviewDraft")
            boxes = dict(new_review.objects.values_list("image_id", "boxes"))
            assert boxes == {first.pk: [{**A, "origin": "reader"}], second.pk: []}
            entry = new_draft.objects.get().data[str(first.pk)]
            assert entry["boxes"] == [{**A, "origin": "reader"}]
            assert "region" not in entry

            executor = MigrationExecutor(connection)
            executor.migrate(before)
            regions = dict(old_review.objects.values_list("image_id", "region"))
            assert regions == {first.pk: A, second.pk: None}
            assert old_draft.objects.get().data[str(first.pk)]["region"] == A
        finally:
            executor = MigrationExecutor(connection)
            executor.loader.build_graph()
            executor.migrate(executor.loader.graph.leaf_nodes())


class TestWebhookReading:
    """Webhooks carry each image's final reading with the readers' boxes, once the case is final."""

    def test_boxes_leave_only_with_the_final_reading(self, radiologist, radiologist_b, settings):
        from diagnosis.services.webhooks import webhook_payload

        settings.SECOND_READ_MODEL_POSITIVE = True  # a model-positive case gets a second read
        case = predicted_case(probabilities=[0.9])
        submit(case, radiologist, decision=CONFIRM, boxes=[A])
        case.refresh_from_db()
        (waiting,) = webhook_payload(case=case, event="case.predicted")["case"]["images"]
        assert waiting["reading"] is None  # not final: nothing of the first read leaves
        submit(case, radiologist_b, decision=CONFIRM, boxes=[{**B, "origin": "model_accepted"}])
        case.refresh_from_db()
        assert case.status == "reviewed"
        payload = webhook_payload(case=case, event="case.reviewed")
        (image,) = payload["case"]["images"]
        assert image["reading"] == {
            "final_label": "fractured",
            "boxes": [{**B, "origin": "model_accepted"}],
        }
        assert radiologist.username not in str(payload)
        assert radiologist_b.username not in str(payload)

    def test_a_no_fracture_reading_has_no_boxes(self, radiologist):
        from diagnosis.services.webhooks import webhook_payload

        case = predicted_case(probabilities=[0.2])
        submit(case, radiologist, decision=CONFIRM)
        case.refresh_from_db()
        (image,) = webhook_payload(case=case, event="case.reviewed")["case"]["images"]
        assert image["reading"] == {"final_label": "not_fractured", "boxes": []}
