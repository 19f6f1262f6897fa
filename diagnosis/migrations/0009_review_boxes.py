"""Several fracture boxes per read: `Review.region` (one box) becomes `Review.boxes` (a list).

Existing boxes are kept as one box drawn by the reader; drafts in progress are converted too.
Reversing keeps the first box of each read as its region.
"""

from django.db import migrations, models

BOX_KEYS = ("x", "y", "w", "h")


def _box(region):
    if isinstance(region, dict) and all(k in region for k in BOX_KEYS):
        box = {k: region[k] for k in BOX_KEYS}
        box["origin"] = "reader"
        return box
    return None


def regions_to_boxes(apps, schema_editor):
    Review = apps.get_model("diagnosis", "Review")
    for review in Review.objects.exclude(region=None).only("pk", "region").iterator():
        box = _box(review.region)
        if box is not None:
            Review.objects.filter(pk=review.pk).update(boxes=[box])
    ReviewDraft = apps.get_model("diagnosis", "ReviewDraft")
    for draft in ReviewDraft.objects.all().iterator():
        data = draft.data if isinstance(draft.data, dict) else {}
        changed = False
        for entry in data.values():
            if isinstance(entry, dict) and "region" in entry:
                box = _box(entry.pop("region"))
                entry["boxes"] = [box] if box is not None else []
                changed = True
        if changed:
            ReviewDraft.objects.filter(pk=draft.pk).update(data=data)


def boxes_to_regions(apps, schema_editor):
    Review = apps.get_model("diagnosis", "Review")
    for review in Review.objects.exclude(boxes=[]).only("pk", "boxes").iterator():
        first = review.boxes[0] if review.boxes else None
        if isinstance(first, dict):
            Review.objects.filter(pk=review.pk).update(region={k: first[k] for k in BOX_KEYS})
    ReviewDraft = apps.get_model("diagnosis", "ReviewDraft")
    for draft in ReviewDraft.objects.all().iterator():
        data = draft.data if isinstance(draft.data, dict) else {}
        for entry in data.values():
            if isinstance(entry, dict) and "boxes" in entry:
                boxes = entry.pop("boxes") or []
                entry["region"] = {k: boxes[0][k] for k in BOX_KEYS} if boxes else None
        ReviewDraft.objects.filter(pk=draft.pk).update(data=data)


class Migration(migrations.Migration):

    dependencies = [
        ("diagnosis", "0008_review_draft"),
    ]

    operations = [
        migrations.AddField(
            model_name="review",
            name="boxes",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(regions_to_boxes, boxes_to_regions),
        migrations.RemoveField(
            model_name="review",
            name="region",
        ),
    ]
