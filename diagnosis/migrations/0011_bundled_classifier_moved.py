"""The bundled classifier moved from ml/weights/default to ml/weights/lite0-256-v1 when the
locator (ml/weights/locate-256-v1) became the default model: versions registered from the old
folder follow it (same model file, same sha256), so an upgraded installation still serves and can
roll back to them."""

from django.db import migrations

OLD, NEW = "ml/weights/default", "ml/weights/lite0-256-v1"


def forwards(apps, schema_editor):
    ModelVersion = apps.get_model("diagnosis", "ModelVersion")
    ModelVersion.objects.filter(artifact_dir=OLD).update(artifact_dir=NEW)


def backwards(apps, schema_editor):
    ModelVersion = apps.get_model("diagnosis", "ModelVersion")
    ModelVersion.objects.filter(artifact_dir=NEW).update(artifact_dir=OLD)


class Migration(migrations.Migration):
    dependencies = [("diagnosis", "0010_image_full_depth")]

    operations = [migrations.RunPython(forwards, backwards)]
