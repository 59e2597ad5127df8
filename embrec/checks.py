"""System checks (ids ``embrec.E001`` …) for configuration mistakes, with hints."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured


@register()
def check_settings(app_configs=None, **kwargs):
    from embrec.conf import embrec_settings
    from embrec.encoders.loading import encoder_config
    from embrec.registry import registry

    errors = []
    try:
        encoders = embrec_settings.ENCODERS
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="Fix settings.EMBREC.", id="embrec.E001")]
    if not isinstance(encoders, dict) or not encoders:
        return [
            Error(
                "EMBREC['ENCODERS'] must be a non-empty dict of alias -> {'CLASS': ..., 'OPTIONS': {...}}.",
                id="embrec.E002",
            )
        ]
    for alias in encoders:
        try:
            config = encoder_config(alias)
            from django.utils.module_loading import import_string

            import_string(config["CLASS"])
        except (ImproperlyConfigured, ImportError) as exc:
            errors.append(
                Error(
                    f"Encoder {alias!r} is misconfigured: {exc}",
                    hint="Point 'CLASS' at an importable embrec.encoders.BaseEncoder subclass.",
                    id="embrec.E003",
                )
            )
    for rec in registry.all():
        for alias in rec.get_encoders():
            if alias not in encoders:
                errors.append(
                    Error(
                        f"{type(rec).__name__} ({rec.label}) uses encoder {alias!r}, which is not in "
                        "EMBREC['ENCODERS'].",
                        hint=f"Add {alias!r} to EMBREC['ENCODERS'] or fix the registration.",
                        id="embrec.E004",
                    )
                )
    engine = settings.DATABASES.get("default", {}).get("ENGINE", "")
    if "postgresql" not in engine and "postgis" not in engine:
        errors.append(
            Error(
                "embrec needs PostgreSQL with pgvector as the default database.",
                hint="Set DATABASE_URL=postgres://… or use embrec.devdb.database_settings().",
                id="embrec.E005",
            )
        )
    return errors


@register(Tags.database)
def check_pgvector(app_configs=None, databases=None, **kwargs):
    """Only runs with ``check --database default`` and before ``migrate``."""
    from django.db import connections

    from embrec.migration_operations import missing_pgvector_message, pgvector_status

    errors = []
    for alias in databases or []:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        available, _installed = pgvector_status(connection)
        if not available:
            errors.append(
                Error(
                    missing_pgvector_message(connection),
                    hint="pgvector ≥ 0.8 is required (iterative index scans).",
                    id="embrec.E010",
                )
            )
    return errors
