from django.apps import AppConfig


class DiagnosisConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "diagnosis"
    verbose_name = "Fracture diagnosis"

    def ready(self) -> None:
        from diagnosis import signals  # noqa: F401  (auth audit receivers)
