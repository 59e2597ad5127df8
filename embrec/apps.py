"""App configuration: discover ``<app>/recommendables.py`` modules and register checks."""

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class EmbrecConfig(AppConfig):
    name = "embrec"
    verbose_name = "Embedding recommendations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from embrec import checks  # noqa: F401  (registers system checks)

        autodiscover_modules("recommendables")
