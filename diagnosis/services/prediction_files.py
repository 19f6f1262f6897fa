"""Prediction files: the heat-map and overlay names, storing them, and the overlay rendered on first
use. Storage only; the rows that point at the files are written by `prediction_results`."""

from __future__ import annotations

import logging

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from diagnosis import inference
from diagnosis.exceptions import NotFoundError, UnreadableImageError
from diagnosis.models import Prediction

logger = logging.getLogger(__name__)


def heatmap_names(prediction_id: int) -> tuple[str, str]:
    """Deterministic storage names (heat-map, captioned overlay): a rerun overwrites. The worker
    writes the heat-map; the overlay is rendered from it when first asked for
    (`prediction_overlay_name`): most are never downloaded, and the pages draw the heat-map over
    the image themselves."""
    return (
        f"heatmaps/prediction-{prediction_id}.png",
        f"heatmaps/prediction-{prediction_id}-overlay.png",
    )


def prediction_file_store(name: str, data: bytes) -> None:
    """Store `data` under exactly `name`, replacing any earlier file of that name."""
    if default_storage.exists(name):
        default_storage.delete(name)
    saved = default_storage.save(name, ContentFile(data))
    if saved != name:  # a concurrent writer won the name: keep its (identical) file
        default_storage.delete(saved)


def prediction_overlay_name(*, prediction: Prediction) -> str:
    """Storage name of the finished prediction's captioned overlay PNG, rendered from the image and
    the stored heat-map on first use and kept (concurrent first requests render the same bytes;
    one file wins). Raises NotFoundError when the prediction has no heat-map or a file is gone."""
    overlay_name = heatmap_names(prediction.pk)[1]
    if prediction.status != Prediction.Status.DONE or not prediction.heatmap:
        raise NotFoundError("This prediction has no heat-map.")
    if default_storage.exists(overlay_name):
        return overlay_name
    try:
        with prediction.heatmap.open("rb") as fh:
            heatmap_png = fh.read()
        image = prediction_image_read(prediction)
    except OSError as exc:
        logger.error("heat-map or image file missing", extra={"prediction_id": prediction.pk})
        raise NotFoundError("The heat-map is not available.") from exc
    try:
        data = inference.overlay_render(image=image, heatmap_png=heatmap_png)
    except UnreadableImageError as exc:
        logger.error("overlay not rendered", extra={"prediction_id": prediction.pk})
        raise NotFoundError("The overlay cannot be rendered.") from exc
    saved = default_storage.save(overlay_name, ContentFile(data))
    if saved != overlay_name:  # a concurrent request stored it first: keep that one
        default_storage.delete(saved)
    return overlay_name


def prediction_image_read(prediction: Prediction) -> bytes:
    """The bytes of the prediction's image file (raises OSError when it is gone)."""
    with prediction.image.file.open("rb") as fh:
        return fh.read()
