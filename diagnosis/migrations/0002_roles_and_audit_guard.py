"""Role groups with their permissions, and a PostgreSQL trigger that makes audit rows immutable."""

from django.db import migrations

AUDIT_GUARD_SQL = """
CREATE OR REPLACE FUNCTION diagnosis_auditevent_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER diagnosis_auditevent_no_update_delete
    BEFORE UPDATE OR DELETE ON diagnosis_auditevent
    FOR EACH ROW EXECUTE FUNCTION diagnosis_auditevent_immutable();
CREATE TRIGGER diagnosis_auditevent_no_truncate
    BEFORE TRUNCATE ON diagnosis_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION diagnosis_auditevent_immutable();
"""

AUDIT_GUARD_REVERSE = """
DROP TRIGGER IF EXISTS diagnosis_auditevent_no_update_delete ON diagnosis_auditevent;
DROP TRIGGER IF EXISTS diagnosis_auditevent_no_truncate ON diagnosis_auditevent;
DROP FUNCTION IF EXISTS diagnosis_auditevent_immutable();
"""


def add_audit_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(AUDIT_GUARD_SQL)


def remove_audit_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(AUDIT_GUARD_REVERSE)


def create_roles(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    from diagnosis.roles import ROLE_PERMISSIONS

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        for dotted in perms:
            app_label, codename = dotted.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


class Migration(migrations.Migration):
    dependencies = [
        ("diagnosis", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
        migrations.RunPython(add_audit_guard, remove_audit_guard),
    ]
