"""Fill Case.first_reader/second_reader from existing reads (a separate migration: PostgreSQL
cannot build the new columns' indexes in a transaction that already updated the table)."""

from django.db import migrations


def backfill_readers(apps, schema_editor):
    """Fill first_reader/second_reader from existing reads (one UPDATE per field)."""
    from django.db.models import OuterRef, Subquery

    Case = apps.get_model("diagnosis", "Case")
    Review = apps.get_model("diagnosis", "Review")
    for field, number in (("first_reader_id", 1), ("second_reader_id", 2)):
        reader = Review.objects.filter(image__case_id=OuterRef("pk"), read_number=number)
        Case.objects.filter(images__reviews__read_number=number).update(
            **{field: Subquery(reader.order_by("pk").values("reviewer_id")[:1])}
        )


class Migration(migrations.Migration):
    dependencies = [("diagnosis", "0004_review_readers")]

    operations = [migrations.RunPython(backfill_readers, migrations.RunPython.noop)]
