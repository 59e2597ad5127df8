from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "project.catalog"
    label = "catalog"
    verbose_name = "Movie catalog (demo)"
    default_auto_field = "django.db.models.BigAutoField"
