"""System checks (ids ``embrec.E001`` …) for configuration mistakes, with hints."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured


def _positive_int(name: str, value, errors: list) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        errors.append(
            Error(
                f"EMBREC[{name!r}] must be a positive integer, got {value!r}.",
                hint=f"Set EMBREC[{name!r}] to an integer of at least 1 or remove it.",
                id="embrec.E007",
            )
        )


@register()
def check_settings(app_configs=None, **kwargs):
    """Validate ``settings.EMBREC``, the encoder configuration and every registration."""
    from django.utils.module_loading import import_string

    from embrec.conf import embrec_settings
    from embrec.encoders.base import BaseEncoder
    from embrec.registry import registry

    errors = []
    try:
        encoders = embrec_settings.ENCODERS
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="Fix settings.EMBREC.", id="embrec.E001")]
    if not isinstance(encoders, dict) or not encoders:
        return [
            Error(
                "EMBREC['ENCODERS'] must be a non-empty dict of alias -> "
                "{'CLASS': ..., 'OPTIONS': {...}}.",
                hint="See the EMBREC settings reference in the README.",
                id="embrec.E002",
            )
        ]
    for alias, config in encoders.items():
        if not isinstance(config, dict) or not isinstance(config.get("CLASS"), str):
            errors.append(
                Error(
                    f"EMBREC['ENCODERS'][{alias!r}] must be a dict with a 'CLASS' dotted path.",
                    hint="e.g. {'CLASS': 'embrec.encoders.static.StaticWordEncoder'}.",
                    id="embrec.E003",
                )
            )
            continue
        try:
            cls = import_string(config["CLASS"])
        except ImportError as exc:
            errors.append(
                Error(
                    f"Encoder {alias!r}: CLASS {config['CLASS']!r} cannot be imported ({exc}).",
                    hint="Point 'CLASS' at an importable embrec.encoders.BaseEncoder subclass.",
                    id="embrec.E003",
                )
            )
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseEncoder)):
            errors.append(
                Error(
                    f"Encoder {alias!r}: CLASS {config['CLASS']!r} is not a BaseEncoder subclass.",
                    hint="Subclass embrec.encoders.BaseEncoder.",
                    id="embrec.E003",
                )
            )
        if not isinstance(config.get("OPTIONS", {}), dict):
            errors.append(
                Error(
                    f"EMBREC['ENCODERS'][{alias!r}]['OPTIONS'] must be a dict.",
                    hint="Use {} for no options.",
                    id="embrec.E009",
                )
            )
    for rec in registry.all():
        aliases = rec.get_encoders()
        if not aliases:
            errors.append(
                Error(
                    f"{type(rec).__name__} ({rec.label}) uses no encoder.",
                    hint="Set `encoders` on the class or EMBREC['DEFAULT_ENCODERS'].",
                    id="embrec.E004",
                )
            )
        for alias in aliases:
            if alias not in encoders:
                errors.append(
                    Error(
                        f"{type(rec).__name__} ({rec.label}) uses encoder {alias!r}, which is not "
                        "in EMBREC['ENCODERS'].",
                        hint=f"Add {alias!r} to EMBREC['ENCODERS'] or fix the registration.",
                        id="embrec.E004",
                    )
                )
        if len(set(aliases)) != len(aliases):
            errors.append(
                Error(
                    f"{type(rec).__name__} ({rec.label}) lists an encoder twice: {aliases}.",
                    hint="List each encoder alias once.",
                    id="embrec.E004",
                )
            )
        try:
            qs_model = rec.get_queryset().model
        except Exception as exc:  # reported as a configuration error, never a traceback
            errors.append(
                Error(
                    f"{type(rec).__name__}.get_queryset() failed: {exc}",
                    hint="get_queryset() must return a QuerySet of the registered model.",
                    id="embrec.E008",
                )
            )
        else:
            if qs_model._meta.concrete_model is not rec.model._meta.concrete_model:
                errors.append(
                    Error(
                        f"{type(rec).__name__}.get_queryset() returns {qs_model.__name__} "
                        f"objects, not {rec.model.__name__}.",
                        hint="get_queryset() must return a QuerySet of the registered model.",
                        id="embrec.E008",
                    )
                )
    defaults = embrec_settings.DEFAULT_ENCODERS
    if not isinstance(defaults, (list, tuple)) or not defaults:
        errors.append(
            Error(
                "EMBREC['DEFAULT_ENCODERS'] must be a non-empty list of encoder aliases.",
                hint="e.g. ['default'].",
                id="embrec.E006",
            )
        )
    else:
        for alias in defaults:
            if alias not in encoders:
                errors.append(
                    Error(
                        f"EMBREC['DEFAULT_ENCODERS'] names {alias!r}, which is not in "
                        "EMBREC['ENCODERS'].",
                        hint=f"Add {alias!r} to EMBREC['ENCODERS'] or remove it from "
                        "DEFAULT_ENCODERS.",
                        id="embrec.E006",
                    )
                )
    for name in ("BATCH_SIZE", "MAX_ATTEMPTS", "SWEEP_AFTER"):
        _positive_int(name, getattr(embrec_settings, name), errors)
    queue = embrec_settings.QUEUE
    if not isinstance(queue, str) or not queue:
        errors.append(
            Error(
                f"EMBREC['QUEUE'] must be a non-empty queue name, got {queue!r}.",
                hint="Use the queue your encoding workers consume (-Q embrec).",
                id="embrec.E007",
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
