import pytest
from django.db import connection, transaction
from django.db.utils import InternalError

from diagnosis.models import AuditEvent, AuditImmutableError
from diagnosis.services.audit import audit_record

pytestmark = pytest.mark.django_db


def test_audit_rows_cannot_be_changed_through_the_orm(clinician):
    event = audit_record(action="case.view", actor=clinician, object_type="case", object_id="x")
    event.action = "tampered"
    with pytest.raises(AuditImmutableError):
        event.save()
    with pytest.raises(AuditImmutableError):
        event.delete()
    with pytest.raises(AuditImmutableError):
        AuditEvent.objects.filter(pk=event.pk).update(action="tampered")
    with pytest.raises(AuditImmutableError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "case.view"


def test_database_trigger_rejects_raw_update_and_delete(clinician):
    event = audit_record(action="case.view", actor=clinician, object_type="case", object_id="x")
    for sql in (
        "UPDATE diagnosis_auditevent SET action = 'x' WHERE id = %s",
        "DELETE FROM diagnosis_auditevent WHERE id = %s",
    ):
        with (
            pytest.raises(InternalError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, [event.pk])
    assert AuditEvent.objects.filter(pk=event.pk, action="case.view").exists()
