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

from typing import Any

import celery
from celery import _state as celery_state
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from embrec.conf import DEFAULTS, SettingProblem, validate
from embrec.encoders.base import INDEX_OPTION_NAMES, BaseEncoder
from embrec.registry import registry
from embrec.storage import index_options


@register()
def check_settings(app_configs=None, **kwargs):
    """Validate ``settings.EMBREC`` (every key, see :func:`embrec.conf.validate`), the encoder
    configuration, every registration and the database engine."""
    problems = validate()
    if any(p.id == "embrec.E001" for p in problems):
        # Reading any setting would raise until EMBREC is a dict of known keys.
        return [Error(p.message, hint=p.hint, id=p.id) for p in problems]
    user = getattr(settings, "EMBREC", {}) or {}
    encoders = user.get("ENCODERS", DEFAULTS["ENCODERS"])
    problems += check_encoders(encoders, user.get("DEFAULT_ENCODERS", DEFAULTS["DEFAULT_ENCODERS"]))
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


def check_encoders(encoders: Any, defaults: Any) -> list[SettingProblem]:
    """Problems with ``EMBREC["ENCODERS"]`` and ``["DEFAULT_ENCODERS"]``: classes that do not
    import or are not encoders, unknown entry keys, ``OPTIONS`` the class does not read
    (:attr:`~embrec.encoders.BaseEncoder.option_names`) or that its constructor rejects."""
    problems: list[SettingProblem] = []
    if not isinstance(encoders, dict) or not encoders:
        return [
            SettingProblem(
                "embrec.E002",
                "ENCODERS",
                "EMBREC['ENCODERS'] must be a non-empty dict of alias -> "
                "{'CLASS': ..., 'OPTIONS': {...}}.",
                "See the EMBREC settings reference in docs/SETTINGS.md.",
            )
        ]
    for alias, config in encoders.items():
        where = f"EMBREC['ENCODERS'][{alias!r}]"
        if not isinstance(config, dict) or not isinstance(config.get("CLASS"), str):
            problems.append(
                SettingProblem(
                    "embrec.E003",
                    "ENCODERS",
                    f"{where} must be a dict with a 'CLASS' dotted path.",
                    "e.g. {'CLASS': 'embrec.encoders.static.StaticWordEncoder'}.",
                )
            )
            continue
        extra = sorted(set(config) - {"CLASS", "OPTIONS"})
        if extra:
            problems.append(
                SettingProblem(
                    "embrec.E009",
                    "ENCODERS",
                    f"{where} has unknown key(s): {', '.join(map(str, extra))}.",
                    "An encoder entry has 'CLASS' and 'OPTIONS' only.",
                )
            )
        try:
            cls = import_string(config["CLASS"])
        except ImportError as exc:
            problems.append(
                SettingProblem(
                    "embrec.E003",
                    "ENCODERS",
                    f"Encoder {alias!r}: CLASS {config['CLASS']!r} cannot be imported ({exc}).",
                    "Point 'CLASS' at an importable embrec.encoders.BaseEncoder subclass.",
                )
            )
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseEncoder)):
            problems.append(
                SettingProblem(
                    "embrec.E003",
                    "ENCODERS",
                    f"Encoder {alias!r}: CLASS {config['CLASS']!r} is not a BaseEncoder subclass.",
                    "Subclass embrec.encoders.BaseEncoder.",
                )
            )
            continue
        options = config.get("OPTIONS", {})
        if not isinstance(options, dict):
            problems.append(
                SettingProblem(
                    "embrec.E009",
                    "ENCODERS",
                    f"{where}['OPTIONS'] must be a dict.",
                    "Use {} for no options.",
                )
            )
            continue
        unknown = (
            sorted(set(options) - cls.option_names - INDEX_OPTION_NAMES)
            if cls.option_names is not None
            else []
        )
        if unknown:
            problems.append(
                SettingProblem(
                    "embrec.E009",
                    "ENCODERS",
                    f"{where}['OPTIONS'] has unknown option(s) for {cls.__name__}: "
                    f"{', '.join(map(str, unknown))}.",
                    f"{cls.__name__} reads: {', '.join(sorted(cls.option_names))}.",
                )
            )
            continue
        try:
            index_options(options)
        except ImproperlyConfigured as exc:
            problems.append(
                SettingProblem(
                    "embrec.E009",
                    "ENCODERS",
                    f"{where}['OPTIONS'] has a bad index option: {exc}",
                    "See 'Index options' in docs/READ_PATH.md.",
                )
            )
            continue
        try:
            # Constructors validate their options and load nothing (models load on first use).
            cls(alias, **options)
        except (ImproperlyConfigured, TypeError, ValueError) as exc:
            problems.append(
                SettingProblem(
                    "embrec.E009",
                    "ENCODERS",
                    f"{where}['OPTIONS'] rejected by {cls.__name__}: {exc}",
                    f"See the docstring of {cls.__module__}.{cls.__name__}.",
                )
            )
    if not isinstance(defaults, (list, tuple)) or not defaults:
        problems.append(
            SettingProblem(
                "embrec.E006",
                "DEFAULT_ENCODERS",
                "EMBREC['DEFAULT_ENCODERS'] must be a non-empty list of encoder aliases.",
                "e.g. ['default'].",
            )
        )
    else:
        for alias in defaults:
            if alias not in encoders:
                problems.append(
                    SettingProblem(
                        "embrec.E006",
                        "DEFAULT_ENCODERS",
                        f"EMBREC['DEFAULT_ENCODERS'] names {alias!r}, which is not in "
                        "EMBREC['ENCODERS'].",
                        f"Add {alias!r} to EMBREC['ENCODERS'] or remove it from DEFAULT_ENCODERS.",
                    )
                )
    return problems


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
