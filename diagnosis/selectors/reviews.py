"""Review workflow reads: the radiologists' queue, a case's reads, and reader statistics.

A case waiting for a read is at one of three stages, derived from its status and flags alone (so the
queue needs no join to find it):

- first read: ``predicted``, or ``in_review`` with neither flag set (a first reader holds the claim);
- second read: ``in_review`` with ``needs_second_read`` and not ``needs_adjudication``;
- adjudication: ``in_review`` with ``needs_adjudication``.

Statistics are computed by pure functions (`cohen_kappa`, `sensitivity_specificity`) over label
pairs; `review_statistics` only gathers the pairs.
"""

from __future__ import annotations

import contextlib
import uuid as uuid_lib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import cache
from django.db.models import Count, Exists, FilteredRelation, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone
from django.utils.http import urlencode
from redis.exceptions import RedisError

from diagnosis.exceptions import NotFoundError
from diagnosis.models import BodyPart, Case, Label, Prediction, Review, ReviewDraft, XrayImage
from diagnosis.selectors.models import model_version_localises
from diagnosis.selectors.params import query_id
from diagnosis.selectors.predictions import prediction_candidates, prediction_current
from diagnosis.selectors.reads import reader_display_name, reads_deciding_boxes, reads_visible

STAGE_FIRST = Review.Read.FIRST
STAGE_SECOND = Review.Read.SECOND
STAGE_ADJUDICATION = Review.Read.ADJUDICATION
STAGE_NAMES = {
    STAGE_FIRST: "First read",
    STAGE_SECOND: "Second read",
    STAGE_ADJUDICATION: "Adjudication",
}
QUEUE_STATUSES = (Case.Status.PREDICTED, Case.Status.IN_REVIEW)

User = AbstractBaseUser | AnonymousUser


# --- Stages and who may do them -------------------------------------------------------------------


def stage_q(stage: int) -> Q:
    """SQL condition for cases waiting at `stage` (see the module docstring)."""
    if stage == STAGE_FIRST:
        return Q(status=Case.Status.PREDICTED) | Q(
            status=Case.Status.IN_REVIEW, needs_second_read=False, needs_adjudication=False
        )
    if stage == STAGE_SECOND:
        return Q(status=Case.Status.IN_REVIEW, needs_second_read=True, needs_adjudication=False)
    if stage == STAGE_ADJUDICATION:
        return Q(status=Case.Status.IN_REVIEW, needs_adjudication=True)
    raise ValueError(f"unknown stage {stage}")


def case_review_stage(case: Case) -> int | None:
    """The read the case waits for, or None when it is not in the review workflow."""
    if case.status == Case.Status.PREDICTED:
        return STAGE_FIRST
    if case.status != Case.Status.IN_REVIEW:
        return None
    if case.needs_adjudication:
        return STAGE_ADJUDICATION
    if case.needs_second_read:
        return STAGE_SECOND
    return STAGE_FIRST


def user_stages(user: User) -> list[int]:
    """Stages the user's permissions allow: reading needs `review_case`, adjudicating
    `adjudicate_case` (radiologists and admins)."""
    if not user.is_authenticated:
        return []
    stages = []
    if user.has_perm("diagnosis.review_case"):
        stages += [STAGE_FIRST, STAGE_SECOND]
    if user.has_perm("diagnosis.adjudicate_case"):
        stages.append(STAGE_ADJUDICATION)
    return stages


def user_can_use_queue(user: User) -> bool:
    return bool(user_stages(user))


def case_readers(*, case: Case) -> dict[int, set[int]]:
    """read number -> ids of the users who made reads of that number on the case."""
    readers: dict[int, set[int]] = defaultdict(set)
    for read_number, reviewer_id in Review.objects.filter(image__case=case).values_list(
        "read_number", "reviewer_id"
    ):
        readers[read_number].add(reviewer_id)
    return readers


def claim_is_active(case: Case, *, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    return bool(
        case.claimed_by_id and case.claim_expires_at is not None and case.claim_expires_at > now
    )


# --- The queue ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFilters:
    body_part: str | None = None
    status: str | None = None
    model_version: int | None = None
    stage: int | None = None

    @classmethod
    def from_params(cls, params: Any) -> QueueFilters:
        """Cleans query parameters; unknown values are ignored rather than rejected."""
        body_part = params.get("body_part") or None
        status = params.get("status") or None
        stage = params.get("stage") or None
        model_version = params.get("model_version") or None
        return cls(
            body_part=body_part if body_part in BodyPart.values else None,
            status=status if status in QUEUE_STATUSES else None,
            model_version=query_id(model_version),
            stage=int(stage) if stage in {"1", "2", "3"} else None,
        )

    def as_params(self) -> dict[str, str]:
        return {
            k: str(v)
            for k, v in (
                ("body_part", self.body_part),
                ("status", self.status),
                ("model_version", self.model_version),
                ("stage", self.stage),
            )
            if v
        }


def _queue_base(
    *, user: User, filters: QueueFilters, now: datetime, stages: list[int] | None = None
) -> QuerySet[Case]:
    stages = user_stages(user) if stages is None else stages
    if not stages:
        return Case.objects.none()
    # Nobody reads a case twice: a second reader is never the first, an adjudicator neither. The
    # readers are columns of the case (see Case.first_reader), so this is a plain comparison.
    not_first = ~Q(first_reader_id=user.pk)
    stage_filter = Q()
    for stage in stages:
        condition = stage_q(stage)
        if stage == STAGE_SECOND:
            condition &= not_first
        elif stage == STAGE_ADJUDICATION:
            condition &= not_first & ~Q(second_reader_id=user.pk)
        stage_filter |= condition
    qs = Case.objects.filter(stage_filter, status__in=QUEUE_STATUSES)
    # Cases another reader holds an unexpired claim on are not available.
    qs = qs.filter(
        Q(claimed_by__isnull=True) | Q(claimed_by_id=user.pk) | Q(claim_expires_at__lte=now)
    )
    if filters.body_part:
        qs = qs.filter(body_part=filters.body_part)
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.model_version:
        qs = qs.filter(
            Exists(
                Prediction.objects.filter(
                    image__case_id=OuterRef("pk"), model_version_id=filters.model_version
                )
            )
        )
    return qs


def review_queue(
    *,
    user: User,
    filters: QueueFilters | None = None,
    now: datetime | None = None,
) -> QuerySet[Case]:
    """Cases awaiting a read this user may do, most urgent first (priority, then waiting time).

    The ordering matches the partial index `case_review_queue`. Per-row figures (top probability,
    model version, image count) are added to a page of rows by `review_queue_rows`, so that deep
    pages do not compute them for the rows they skip.
    """
    filters = filters or QueueFilters()
    now = now or timezone.now()
    stages = user_stages(user)
    if filters.stage:
        stages = [s for s in stages if s == filters.stage]
    return (
        _queue_base(user=user, filters=filters, now=now, stages=stages)
        .select_related("claimed_by")
        .order_by("-priority", "created_at")
    )


def review_queue_rows(cases: Iterable[Case]) -> list[Case]:
    """Attach `top_probability`, `top_model_version`, `top_threshold` and `top_flagged` (the image
    with the highest fracture probability, the threshold of its version's default operating point
    and whether the model flags it there) and `image_count` to a page of cases: one query whatever
    its size."""
    cases = list(cases)
    top: dict[int, tuple[float, str, float | None, bool]] = {}
    images: dict[int, set[int]] = defaultdict(set)
    rows = (
        XrayImage.objects.filter(case_id__in=[case.pk for case in cases])
        .order_by()
        .values_list(
            "case_id",
            "pk",
            "predictions__status",
            "predictions__probability",
            "predictions__label",
            "predictions__model_version__version",
            "predictions__model_version__thresholds",
            "predictions__model_version__default_operating_point",
        )
    )
    for case_id, image_id, status, probability, label, version, thresholds, point in rows:
        images[case_id].add(image_id)
        if status != Prediction.Status.DONE or probability is None:
            continue
        if case_id not in top or probability > top[case_id][0]:
            threshold = (thresholds or {}).get(point)
            top[case_id] = (probability, version, threshold, label == Label.FRACTURED)
    for case in cases:
        (
            case.top_probability,
            case.top_model_version,
            case.top_threshold,
            case.top_flagged,
        ) = top.get(case.pk, (None, "", None, False))
        case.image_count = len(images.get(case.pk, ()))
    return cases


def review_queue_counts(
    *,
    user: User,
    filters: QueueFilters | None = None,
    now: datetime | None = None,
    cached: bool = True,
) -> dict[str, int]:
    """Counts of the user's queue by stage (one query); `mine` counts the claims the user holds.

    With a large backlog this is the queue page's most expensive query (it visits every waiting
    case), so the result is kept for REVIEW_QUEUE_COUNTS_CACHE_SECONDS (0: never) per user and
    filters; the user's own claims, releases and reads drop their entries at once. The rows of the
    queue are never cached.
    """
    filters = filters or QueueFilters()
    ttl = settings.REVIEW_QUEUE_COUNTS_CACHE_SECONDS if cached else 0
    key = ""
    if ttl > 0:
        try:
            generation = cache.get(_counts_generation_key(user.pk), 0)
            key = f"review:counts:{user.pk}:{generation}:{urlencode(sorted(filters.as_params().items()))}"
            hit = cache.get(key)
        except (RedisError, OSError):  # the cache is down: count without it
            key, hit = "", None
        if hit is not None:
            return hit
    now = now or timezone.now()
    base = _queue_base(user=user, filters=filters, now=now)
    counts = base.aggregate(
        total=Count("pk"),
        first=Count("pk", filter=stage_q(STAGE_FIRST)),
        second=Count("pk", filter=stage_q(STAGE_SECOND)),
        adjudication=Count("pk", filter=stage_q(STAGE_ADJUDICATION)),
        mine=Count("pk", filter=Q(claimed_by_id=user.pk, claim_expires_at__gt=now)),
    )
    result = {k: int(v or 0) for k, v in counts.items()}
    if key:
        with contextlib.suppress(RedisError, OSError):
            cache.set(key, result, ttl)
    return result


def _counts_generation_key(user_pk: int | None) -> str:
    return f"review:counts-generation:{user_pk}"


def review_queue_counts_forget(*, user_pk: int) -> None:
    """Drop the user's cached queue counts (after their own claim, release or read)."""
    key = _counts_generation_key(user_pk)
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, 1, None)
    except (RedisError, OSError):  # the cache is down: nothing cached to drop (runs after commit)
        pass


def review_claims_held(*, user: User, now: datetime | None = None) -> QuerySet[Case]:
    """Cases the user holds an unexpired claim on (shown at the top of the queue)."""
    now = now or timezone.now()
    if not user.is_authenticated:
        return Case.objects.none()
    return Case.objects.filter(
        claimed_by_id=user.pk, claim_expires_at__gt=now, status__in=QUEUE_STATUSES
    ).order_by("claim_expires_at")


def review_case_get(*, user: User, case_uuid: uuid_lib.UUID | str) -> Case:
    """A case for the review screens. Only queue users reach it; others get NotFoundError."""
    if not user_can_use_queue(user):
        raise NotFoundError("Case not found.")
    try:
        return Case.objects.select_related("created_by", "claimed_by").get(uuid=case_uuid)
    except (Case.DoesNotExist, ValueError) as exc:
        raise NotFoundError("Case not found.") from exc


# --- A case's images, predictions and reads --------------------------------------------------------


@dataclass
class ImageWithReads:
    image: XrayImage
    prediction: Prediction | None
    reads: dict[int, Review] = field(default_factory=dict)

    @property
    def model_label(self) -> str:
        return self.prediction.label if self.prediction is not None else ""

    def final_read(self) -> Review | None:
        return self.reads[max(self.reads)] if self.reads else None

    def final_boxes(self) -> list[dict[str, Any]]:
        """The fracture boxes of the final reading (`reads_deciding_boxes`); empty when the final
        label is not a fracture."""
        final = self.final_read()
        if final is None:
            return []
        return reads_deciding_boxes(self.reads.values(), final.final_label)


def candidate_fractions(prediction: Prediction | None, image: XrayImage) -> list[dict[str, Any]]:
    """The prediction's suspected fracture sites as boxes in fractions of the canonical image
    (the frame of a reader's boxes), best first: [{"x", "y", "w", "h", "score", "rank"}]: the
    candidates the case page and the API serve (`prediction_candidates`, in pixels), divided by
    the image's size. Only a finished prediction of a version that localises has any."""
    if prediction is None or not image.width or not image.height:
        return []
    if prediction.status != Prediction.Status.DONE or not model_version_localises(
        prediction.model_version
    ):
        return []
    boxes = prediction_candidates(prediction.candidates, width=image.width, height=image.height)
    return [
        {
            "x": round(box["x0"] / image.width, 5),
            "y": round(box["y0"] / image.height, 5),
            "w": round((box["x1"] - box["x0"]) / image.width, 5),
            "h": round((box["y1"] - box["y0"]) / image.height, 5),
            "score": round(box["score"], 4),
            "rank": rank,
        }
        for rank, box in enumerate(boxes, 1)
    ]


def latest_prediction(image: XrayImage) -> Prediction | None:
    """The newest finished prediction among the image's prefetched `done_predictions`."""
    done = getattr(image, "done_predictions", None)
    if done is None:
        done = list(
            image.predictions.filter(status=Prediction.Status.DONE).select_related("model_version")
        )
    return prediction_current(done)


def case_image_reads(
    *, case: Case, viewer: AbstractBaseUser | AnonymousUser | None = None
) -> list[ImageWithReads]:
    """The case's images in order, each with its newest finished prediction and its reads: all of
    them, or with `viewer` those the blind-read rule lets the viewer see
    (`diagnosis.selectors.reads.reads_visible`). Three queries whatever the image count."""
    images = (
        XrayImage.objects.filter(case=case)
        .order_by("position", "pk")
        .prefetch_related(
            Prefetch(
                "predictions",
                queryset=Prediction.objects.filter(status=Prediction.Status.DONE).select_related(
                    "model_version"
                ),
                to_attr="done_predictions",
            )
        )
    )
    result = [ImageWithReads(image=img, prediction=latest_prediction(img)) for img in images]
    reviews = list(Review.objects.filter(image__case=case).select_related("reviewer"))
    if viewer is not None:
        reviews = reads_visible(user=viewer, case=case, reads=reviews)
    by_image = {item.image.pk: item for item in result}
    for review in reviews:
        by_image[review.image_id].reads[review.read_number] = review
    return result


def case_review_summary(*, case: Case) -> dict[str, Any] | None:
    """What the clinician sees once the case is reviewed: final label, the readers and when, the
    model's result beside it and the deciding region per image. None before the review ends."""
    if case.status != Case.Status.REVIEWED:
        return None
    images = case_image_reads(case=case)
    readers: dict[tuple[int, int], Review] = {}
    for item in images:
        for number, read in item.reads.items():
            readers.setdefault((number, read.reviewer_id), read)
    return {
        "final_label": case.final_label,
        "final_label_display": Label(case.final_label).label if case.final_label else "",
        "reviewed_at": case.reviewed_at,
        "adjudicated": case.needs_adjudication,
        "second_read": case.needs_second_read,
        "readers": [
            {
                "read_number": number,
                "read_name": STAGE_NAMES.get(number, ""),
                "reviewer": reader_display_name(
                    first_name=read.reviewer.first_name,
                    last_name=read.reviewer.last_name,
                    user_id=read.reviewer_id,
                ),
                "at": read.created_at,
            }
            for (number, _), read in sorted(readers.items())
        ],
        "images": images,
    }


# --- Statistics ---------------------------------------------------------------------------------------


def cohen_kappa(pairs: Iterable[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters over the same items: (p_o - p_e) / (1 - p_e).

    None when there are no items or chance agreement is total (both raters used one category).
    """
    return cohen_kappa_counts(Counter(pairs))


def cohen_kappa_counts(table: Mapping[tuple[str, str], int]) -> float | None:
    """`cohen_kappa` from a contingency table {(rating A, rating B): count}."""
    n = sum(table.values())
    if n == 0:
        return None
    observed = sum(count for (a, b), count in table.items() if a == b) / n
    count_a: dict[str, int] = defaultdict(int)
    count_b: dict[str, int] = defaultdict(int)
    for (a, b), count in table.items():
        count_a[a] += count
        count_b[b] += count
    expected = sum(count_a[c] * count_b.get(c, 0) for c in count_a) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def sensitivity_specificity(
    pairs: Iterable[tuple[str, str]], *, positive: str = Label.FRACTURED
) -> dict[str, Any]:
    """(model label, confirmed label) pairs -> confusion counts, sensitivity, specificity.

    A rate is None when its denominator is zero.
    """
    return sensitivity_specificity_counts(Counter(pairs), positive=positive)


def sensitivity_specificity_counts(
    table: Mapping[tuple[str, str], int], *, positive: str = Label.FRACTURED
) -> dict[str, Any]:
    """`sensitivity_specificity` from a table {(model label, confirmed label): count}."""
    tp = fp = tn = fn = 0
    for (predicted, truth), count in table.items():
        if truth == positive:
            if predicted == positive:
                tp += count
            else:
                fn += count
        elif predicted == positive:
            fp += count
        else:
            tn += count
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "n": tp + fp + tn + fn,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
    }


def _stats_row(
    reader_pairs: Counter[tuple[str, str]],
    model_reader_pairs: Counter[tuple[str, str]],
    confirmed_pairs: Counter[tuple[str, str]],
) -> dict[str, Any]:
    return {
        "reader_pairs": sum(reader_pairs.values()),
        "reader_kappa": cohen_kappa_counts(reader_pairs),
        "model_reader_pairs": sum(model_reader_pairs.values()),
        "model_reader_kappa": cohen_kappa_counts(model_reader_pairs),
        "confirmed": sensitivity_specificity_counts(confirmed_pairs),
    }


def review_statistics(*, body_part: str | None = None) -> dict[str, Any]:
    """Agreement and running accuracy per body part and overall.

    - readers: first vs second read of the same image (Cohen's kappa);
    - model vs readers: the model's label at its default operating point vs each first and
      second read's label;
    - the model's sensitivity/specificity against confirmed labels (the deciding read of every
      image of a reviewed case) - the model's label being the one the first reader saw.

    The database groups the reads (one query); Python only adds up the groups, whose number does
    not grow with the number of reviews.
    """
    first_reads = Review.objects.filter(read_number=STAGE_FIRST).order_by()
    if body_part:
        first_reads = first_reads.filter(image__case__body_part=body_part)
    # One row per image with a first read, its later reads joined beside it (the unique
    # (image, read_number) index serves both joins), grouped by everything the figures need.
    grouped = (
        first_reads.annotate(
            r2=FilteredRelation("image__reviews", condition=Q(image__reviews__read_number=2)),
            r3=FilteredRelation("image__reviews", condition=Q(image__reviews__read_number=3)),
        )
        .values(
            "image__case__body_part",
            "image__case__status",
            "final_label",
            "prediction__label",
            "r2__final_label",
            "r2__prediction__label",
            "r3__final_label",
        )
        .annotate(n=Count("pk"))
    )
    groups: dict[str, dict[str, Counter]] = defaultdict(
        lambda: {"readers": Counter(), "model_readers": Counter(), "confirmed": Counter()}
    )
    images = 0
    for g in grouped:
        count = g["n"]
        images += count
        first, second, third = g["final_label"], g["r2__final_label"], g["r3__final_label"]
        model_1, model_2 = g["prediction__label"] or "", g["r2__prediction__label"] or ""
        for key in ("all", g["image__case__body_part"]):
            tables = groups[key]
            if second:
                tables["readers"][(first, second)] += count
            if model_1:
                tables["model_readers"][(model_1, first)] += count
            if second and model_2:
                tables["model_readers"][(model_2, second)] += count
            if g["image__case__status"] == Case.Status.REVIEWED and model_1:
                tables["confirmed"][(model_1, third or second or first)] += count

    def row(key: str, name: str) -> dict[str, Any]:
        g = groups[key]
        return {
            "key": key,
            "name": name,
            **_stats_row(g["readers"], g["model_readers"], g["confirmed"]),
        }

    result_rows = [row("all", "All body parts")]
    result_rows += [row(key, name) for key, name in BodyPart.choices if key in groups]
    return {"rows": result_rows, "images": images}


def review_draft_data(*, case: Case, user: User, read_number: int | None) -> dict[str, Any]:
    """The reader's saved work in progress on this read of the case ({} when there is none)."""
    if read_number is None:
        return {}
    draft = ReviewDraft.objects.filter(
        case_id=case.pk, reviewer_id=user.pk, read_number=read_number
    ).first()
    return draft.data if draft else {}
