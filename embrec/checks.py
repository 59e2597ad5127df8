"""System checks (ids ``embrec.E001`` …) for configuration mistakes, with hints.

======  ====================================================================================
id      meaning
======  ====================================================================================
E001    ``settings.EMBREC`` is not a dict, or has unknown keys
E002    ``ENCODERS`` is not a non-empty dict
E003    an encoder's ``CLASS`` is missing, cannot be imported or is not a ``BaseEncoder``
E004    a registration uses no encoder, an unknown one, or one twice
E005    the default database is not PostgreSQL
E006    ``DEFAULT_ENCODERS`` is empty or names an unknown alias
E007    a count (``BATCH_SIZE``, ``MAX_LIMIT``…) is not a positive integer; ``QUEUE`` is empty
E008    a registration's ``get_queryset()`` fails or returns another model
E009    an encoder's ``OPTIONS`` is not a dict, has names the encoder does not read, a bad index
        option (``index``, ``rerank``), or is
        rejected by its constructor
E010    pgvector is missing (``check --database default``)
E011    any other key has a value of the wrong type, outside its range, or not one of its choices
E012    ``THROTTLE_RATES`` has an unknown scope or a value that is not a rate
E013    ``API_PERMISSION_CLASSES`` / ``API_THROTTLE_CLASSES`` name something that does not import
        or is not a DRF permission / throttle class
E014    ``celery.current_app`` is Celery's default app: the project's Celery app is not loaded
W001    the current Celery app's broker is not ``settings.CELERY_BROKER_URL``
======  ====================================================================================
"""

from __future__ import annotations

import celery
from celery import _state as celery_state
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import connections

from embrec.conf import DEFAULTS, validate
from embrec.migration_operations import missing_pgvector_message, pgvector_status
from embrec.registry import registry


@register()
def check_settings(app_configs=None, **kwargs):
    """Validate ``settings.EMBREC`` (every key and encoder entry: :func:`embrec.conf.validate`),
    every registration and the database engine."""
    problems = validate()
    if any(p.id == "embrec.E001" for p in problems):
        # Reading any setting would raise until EMBREC is a dict of known keys.
        return [Error(p.message, hint=p.hint, id=p.id) for p in problems]
    user = getattr(settings, "EMBREC", {}) or {}
    encoders = user.get("ENCODERS", DEFAULTS["ENCODERS"])
    errors = [Error(p.message, hint=p.hint, id=p.id) for p in problems]
    if any(p.key == "ENCODERS" for p in problems) or not isinstance(encoders, dict):
        return errors
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


CELERY_HINT = """Load your Celery app when Django starts, in your project package's __init__.py:

    from .celery import app as celery_app

    __all__ = ["celery_app"]"""


@register()
def check_celery_app(app_configs=None, **kwargs):
    """The Celery app saves send tasks with must be the project's own.

    Without ``from .celery import app`` in the project package, ``celery.current_app`` in the web
    process is Celery's fallback app: it ignores the ``CELERY_*`` settings and publishes to
    ``amqp://guest@localhost``, so drain tasks go nowhere while every save still succeeds.
    """
    app = celery.current_app._get_current_object()
    if app is celery_state.default_app and app.main in (None, "default"):
        return [
            Error(
                "No Celery app of the project is loaded: celery.current_app is Celery's default "
                "app, which ignores the CELERY_* settings; embrec's tasks would be sent to "
                f"{app.conf.broker_url or 'amqp://guest@localhost//'} instead of your broker.",
                hint=CELERY_HINT,
                id="embrec.E014",
            )
        ]
    configured = getattr(settings, "CELERY_BROKER_URL", None)
    if configured and not app.conf.task_always_eager and app.conf.broker_url != configured:
        return [
            Warning(
                f"The current Celery app ({app.main}) sends to {app.conf.broker_url!r}, not to "
                f"settings.CELERY_BROKER_URL ({configured!r}).",
                hint="Configure the app from Django's settings: "
                'app.config_from_object("django.conf:settings", namespace="CELERY").',
                id="embrec.W001",
            )
        ]
    return []


@register(Tags.database)
def check_pgvector(app_configs=None, databases=None, **kwargs):
    """Only runs with ``check --database default`` and before ``migrate``."""
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
