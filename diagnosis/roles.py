"""Role groups and the permissions each grants.

Created by migration 0002 and kept in sync after every `migrate` (post_migrate receiver in
diagnosis.signals) and by `manage.py sync_roles`. Code checks permissions, never group names.
"""

CLINICIAN = "clinician"
RADIOLOGIST = "radiologist"
ADMIN = "admin"

ROLE_PERMISSIONS: dict[str, list[str]] = {
    CLINICIAN: ["diagnosis.add_case", "diagnosis.view_case"],
    RADIOLOGIST: [
        "diagnosis.add_case",
        "diagnosis.view_case",
        "diagnosis.view_all_cases",
        "diagnosis.review_case",
        "diagnosis.adjudicate_case",
    ],
    ADMIN: [
        "diagnosis.add_case",
        "diagnosis.view_case",
        "diagnosis.view_all_cases",
        "diagnosis.adjudicate_case",
        "diagnosis.manage_models",
        "diagnosis.view_auditevent",
        "diagnosis.view_modelversion",
        "diagnosis.view_trainingrun",
        "diagnosis.view_datasetsnapshot",
        # User management in the Django admin (superuser flags stay with superusers).
        "auth.view_user",
        "auth.add_user",
        "auth.change_user",
        "auth.view_group",
    ],
}
