"""Model registry writes: registration of an artifact folder, activation (manual or by the
promotion rule), rollback, rejection, and re-running predictions of unreviewed cases on the active
version. Every change but registration is audited."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from diagnosis import inference
from diagnosis.exceptions import (
    ConflictError,
    InvalidStateError,
    ModelArtifactError,
    NoActiveModelError,
)
from diagnosis.models import Case, ModelVersion
from diagnosis.selectors.models import model_version_get_active
from diagnosis.selectors.training import (
    model_version_get_previous_active,
    unreviewed_cases_without_version,
)
from diagnosis.services.audit import audit_record
from diagnosis.services.predictions import case_request_predictions

logger = logging.getLogger(__name__)

HIGH_SENSITIVITY = "high_sensitivity"


class NoPreviousVersionError(ConflictError):
    code = "no_previous_version"


@transaction.atomic
def model_version_register(
    *, artifact_dir: Path, version: str = "", activate: bool = False
) -> tuple[ModelVersion, bool]:
    """Register an artifact folder as a ModelVersion (idempotent; returns (row, created)).

    Reads card.json and checks model.keras against its sha256 without importing TensorFlow. The
    same version with the same checksum updates the row; a different checksum is refused. The
    version becomes active when `activate` is set or no version is active (the previous active one
    is retired).
    """
    card = inference.artifact_verify(artifact_dir)
    name = (version or card.version).strip()
    if not name:
        raise ModelArtifactError("The model card names no version; pass one.")
    fields = {
        "artifact_dir": inference.artifact_dir_for_storage(artifact_dir),
        "sha256": card.sha256,
        "architecture": card.architecture[:64],
        "input_spec": card.input_spec,
        "thresholds": card.thresholds,
        "default_operating_point": card.default_operating_point,
        "temperature": card.temperature,
        "gradcam_layer": card.gradcam_layer,
        "metrics": card.metrics,
        "card": card.card,
    }
    row = ModelVersion.objects.select_for_update().filter(version=name).first()
    created = row is None
    if row is None:
        row = ModelVersion.objects.create(version=name, **fields)
    elif row.sha256 != card.sha256:
        raise ModelArtifactError(
            f"Version {name} is already registered with another model file (sha256 differs)."
        )
    else:
        for key, value in fields.items():
            setattr(row, key, value)
        row.save(update_fields=list(fields))
    active = model_version_get_active()
    if activate or active is None:
        if active is not None and active.pk != row.pk:
            ModelVersion.objects.filter(pk=active.pk).update(status=ModelVersion.Status.RETIRED)
        if row.status != ModelVersion.Status.ACTIVE:
            row.status = ModelVersion.Status.ACTIVE
            row.promoted_at = timezone.now()
            row.save(update_fields=["status", "promoted_at"])
    logger.info(
        "model version registered",
        extra={"model_version": row.version, "new": created, "status": row.status},
    )
    return row, created


def _lock_versions(*pks: int) -> None:
    """Row locks on the active version and the given ones, in a fixed order (no deadlocks)."""
    active_pks = list(
        ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).values_list("pk", flat=True)
    )
    list(
        ModelVersion.objects.select_for_update()
        .filter(pk__in=sorted({*pks, *active_pks}))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


@transaction.atomic
def model_version_activate(
    *,
    version: ModelVersion,
    user: AbstractBaseUser | None,
    reason: str = "manual",
    request: HttpRequest | None = None,
    decision: dict[str, Any] | None = None,
) -> ModelVersion:
    """Make `version` the active model; the current one is retired. Idempotent for the active one.

    `reason`: "manual" (an admin's approval), "auto" (the promotion rule), "rollback".
    """
    _lock_versions(version.pk)
    version.refresh_from_db()
    if version.status == ModelVersion.Status.ACTIVE:
        return version
    if version.status == ModelVersion.Status.REJECTED:
        raise InvalidStateError("A rejected version cannot be activated.", version=version.version)
    previous = model_version_get_active()
    if previous is not None:
        ModelVersion.objects.filter(pk=previous.pk).update(status=ModelVersion.Status.RETIRED)
    version.status = ModelVersion.Status.ACTIVE
    version.promoted_by = user if user is not None and user.is_authenticated else None
    version.promoted_at = timezone.now()
    version.save(update_fields=["status", "promoted_by", "promoted_at"])
    audit_record(
        action="model.activate",
        actor=user,
        request=request,
        obj=version,
        object_id=version.version,
        reason=reason,
        previous=previous.version if previous else "",
        **({"decision": decision} if decision else {}),
    )
    logger.info(
        "model version activated",
        extra={
            "model_version": version.version,
            "previous": previous.version if previous else "",
            "reason": reason,
        },
    )
    return version


@transaction.atomic
def model_version_rollback(
    *, user: AbstractBaseUser | None, request: HttpRequest | None = None
) -> ModelVersion:
    """Re-activate the version that was active before the current one."""
    target = model_version_get_previous_active()
    if target is None:
        raise NoPreviousVersionError("There is no previously active version to roll back to.")
    return model_version_activate(version=target, user=user, reason="rollback", request=request)


@transaction.atomic
def model_version_reject(
    *, version: ModelVersion, user: AbstractBaseUser, request: HttpRequest | None = None
) -> ModelVersion:
    """An admin declines a candidate held by the promotion rule."""
    _lock_versions(version.pk)
    version.refresh_from_db()
    if version.status != ModelVersion.Status.CANDIDATE:
        raise InvalidStateError("Only a candidate can be rejected.", version=version.version)
    version.status = ModelVersion.Status.REJECTED
    version.save(update_fields=["status"])
    audit_record(
        action="model.reject", actor=user, request=request, obj=version, object_id=version.version
    )
    return version


def model_version_repredict_unreviewed(
    *, user: AbstractBaseUser | None, request: HttpRequest | None = None, limit: int = 5000
) -> int:
    """Request predictions on the active version for cases awaiting review that lack them (each
    case through the inference pipeline's own, idempotent request). Returns the number of cases."""
    active = model_version_get_active()
    if active is None:
        raise NoActiveModelError("No model version is active.")
    case_ids = list(
        unreviewed_cases_without_version(version=active).values_list("pk", flat=True)[:limit]
    )
    for case in Case.objects.filter(pk__in=case_ids).order_by("pk"):
        case_request_predictions(case=case)
    audit_record(
        action="model.repredict",
        actor=user,
        request=request,
        obj=active,
        object_id=active.version,
        cases=len(case_ids),
    )
    logger.info(
        "re-prediction requested", extra={"model_version": active.version, "cases": len(case_ids)}
    )
    return len(case_ids)


def _evidence_reasons(
    *, test_positives: int, test_negatives: int, comparison: dict[str, float] | None
) -> list[str]:
    """Why the frozen test split cannot support an automatic promotion (empty: it can)."""
    need = settings.PROMOTION_MIN_TEST_PER_CLASS
    reasons = []
    if test_positives < need or test_negatives < need:
        reasons.append(
            f"too little evidence: the frozen test split has {test_positives} fractured and "
            f"{test_negatives} not-fractured images; automatic promotion needs at least {need} "
            "of each (an admin may still promote by hand)"
        )
    if comparison is not None and comparison["upper"] - comparison["lower"] <= 0:
        reasons.append(
            "too little evidence: the AUROC difference has a zero-width confidence interval "
            f"({comparison['lower']:+.3f} to {comparison['upper']:+.3f}: the models score alike "
            "on every resample), so the test split cannot tell them apart"
        )
    return reasons


def promotion_decide(
    *,
    test_positives: int,
    test_negatives: int,
    comparison: dict[str, float] | None,
    candidate_sensitivity: float,
    active_sensitivity: float | None,
    margin: float | None = None,
    tolerance: float | None = None,
    localisation: dict[str, float] | None = None,
    localisation_margin: float | None = None,
) -> dict[str, Any]:
    """The gate: promote only if AUROC is not worse beyond `margin` with 95% confidence (the lower
    bound of the paired-bootstrap CI of candidate - active >= -margin) AND the sensitivity at the
    high-sensitivity operating point holds (>= active - `tolerance`) AND, where the test split has
    expert boxes (`localisation`: the paired bootstrap of top-1 localisation, candidate - active),
    top-1 localisation is not worse beyond `localisation_margin` with 95% confidence. Below a
    minimum of evidence nothing is promoted automatically, whatever the figures: fewer than
    PROMOTION_MIN_TEST_PER_CLASS fractured or not-fractured images in the frozen test split, or a
    confidence interval of zero width (two models perfect on a 16-image split compare as
    "not worse" with certainty they do not have). Pure; returns the verdict with its reasons,
    stored on the run and in the audit trail."""
    margin = settings.PROMOTION_AUROC_MARGIN if margin is None else margin
    tolerance = settings.PROMOTION_SENSITIVITY_TOLERANCE if tolerance is None else tolerance
    localisation_margin = (
        settings.PROMOTION_LOCALISATION_MARGIN
        if localisation_margin is None
        else localisation_margin
    )
    rule = {
        "auroc_margin": margin,
        "sensitivity_tolerance": tolerance,
        "localisation_margin": localisation_margin,
    }
    rule["min_test_per_class"] = settings.PROMOTION_MIN_TEST_PER_CLASS
    evidence = _evidence_reasons(
        test_positives=test_positives,
        test_negatives=test_negatives,
        comparison=comparison if active_sensitivity is not None else None,
    )
    if active_sensitivity is None:
        return {
            "promote": not evidence,
            "rule": rule,
            "reasons": ["no active model to compare with", *evidence],
            "checks": {"evidence": not evidence},
        }
    if comparison is None:
        return {
            "promote": False,
            "rule": rule,
            "reasons": ["the test split lacks one class: AUROC cannot be compared", *evidence],
            "checks": {"auroc": False, "evidence": not evidence},
        }
    auroc_ok = comparison["lower"] >= -margin
    sensitivity_ok = candidate_sensitivity >= active_sensitivity - tolerance
    reasons = [
        (
            f"AUROC difference {comparison['difference']:+.3f} "
            f"(95% CI {comparison['lower']:+.3f} to {comparison['upper']:+.3f}): "
            + ("not worse than" if auroc_ok else "may be worse than")
            + f" the active model by more than {margin:.3f}"
        ),
        (
            f"sensitivity at the high-sensitivity point {candidate_sensitivity:.3f} vs "
            f"{active_sensitivity:.3f}: "
            + ("holds" if sensitivity_ok else "drops by more than")
            + ("" if sensitivity_ok else f" {tolerance:.3f}")
        ),
    ]
    checks = {"auroc": bool(auroc_ok), "sensitivity": bool(sensitivity_ok)}
    if localisation is not None:
        localisation_ok = localisation["lower"] >= -localisation_margin
        checks["localisation"] = bool(localisation_ok)
        reasons.append(
            f"top-1 localisation {localisation['top1_candidate']:.3f} vs "
            f"{localisation['top1_active']:.3f} on {localisation['fractured_images']} fractured "
            f"images (difference 95% CI {localisation['lower']:+.3f} to "
            f"{localisation['upper']:+.3f}): "
            + ("not worse than" if localisation_ok else "may be worse than")
            + f" the active model by more than {localisation_margin:.3f}"
        )
    checks["evidence"] = not evidence
    return {
        "promote": all(checks.values()),
        "rule": rule,
        "reasons": [*reasons, *evidence],
        "checks": checks,
    }
