"""Upgrading an installation whose versions were registered from the old bundled folder."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from diagnosis import inference

BEFORE = [("diagnosis", "0010_image_full_depth")]
AFTER = [("diagnosis", "0011_bundled_classifier_moved")]


@pytest.mark.django_db(transaction=True)
def test_versions_registered_from_the_old_folder_follow_the_classifier():
    moved = settings.BASE_DIR / "ml" / "weights" / "lite0-256-v1"
    sha256 = json.loads((moved / "card.json").read_text())["sha256"]
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps.get_model("diagnosis", "ModelVersion")
        fields = {"sha256": sha256, "architecture": "efficientnet_lite0", "input_spec": {}}
        old.objects.create(version="lite0-256-v1", artifact_dir="ml/weights/default", **fields)
        old.objects.create(version="elsewhere", artifact_dir="/srv/models/x", **fields)

        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
        paths = dict(old.objects.values_list("version", "artifact_dir"))
        assert paths == {"lite0-256-v1": "ml/weights/lite0-256-v1", "elsewhere": "/srv/models/x"}
        # the stored path resolves to the shipped artifact, whose checksum is the registered one
        card = inference.artifact_verify(inference.artifact_path(paths["lite0-256-v1"]))
        assert card.sha256 == sha256

        executor = MigrationExecutor(connection)
        executor.migrate(BEFORE)
        assert old.objects.get(version="lite0-256-v1").artifact_dir == "ml/weights/default"
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
