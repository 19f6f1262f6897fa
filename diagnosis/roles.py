"""Role groups and the permissions each grants (created by migration 0002, kept in sync by
`manage.py sync_roles`)."""

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
    ],
}
