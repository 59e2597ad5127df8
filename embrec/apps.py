"""App configuration: wire embrec's receivers, tasks and checks, discover registrations."""

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class EmbrecConfig(AppConfig):
    name = "embrec"
    verbose_name = "Embedding recommendations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, the one place in embrec: these modules use the models, which Django
        # loads after this module.
        from embrec import checks, signals, tasks  # noqa: F401  (system checks, Celery tasks)

        signals.connect()
        autodiscover_modules("recommendables")
