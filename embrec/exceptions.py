"""The errors embrec raises to its callers, under one base class, :class:`EmbrecError`.

Each error carries what an HTTP answer needs: ``code`` (a short machine-readable reason),
``field`` (the parameter at fault, if any) and ``status`` (the HTTP status the REST API answers
with); :meth:`EmbrecError.details` adds any further body fields. The API maps every
:class:`EmbrecError` the same way (see :func:`embrec.api.views.exception_handler`), so a new
error type needs no change there.

Each class also derives from the built-in exception it always was (``ValueError``,
``LookupError``, ``ImproperlyConfigured``), so ``except ValueError`` keeps catching bad input.

This module imports nothing from embrec: any module may raise these errors.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "AlreadyRegistered",
    "AnalysisError",
    "EmbrecError",
    "InteractionError",
    "NotEmbedded",
    "NotRegistered",
    "QueryError",
    "VersionUnavailable",
]


class EmbrecError(Exception):
    """Base class of embrec's errors: a message, ``code``, ``field`` and HTTP ``status``.

    Subclasses set class-level defaults; ``code`` and ``field`` may be given per instance.
    """

    #: Machine-readable reason (the API's ``code``).
    code: str = "error"
    #: The parameter at fault, or ``None``.
    field: str | None = None
    #: The HTTP status the REST API answers with.
    status: int = 400

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        if field is not None:
            self.field = field

    def details(self) -> dict[str, Any]:
        """Extra fields of the API's error body (beyond ``detail``, ``code`` and ``field``)."""
        return {}


class QueryError(EmbrecError, ValueError):
    """Bad query input (limit, filters, text, re-ranking options); the API answers 400.

    ``code`` is a short machine-readable reason, ``field`` the parameter at fault.
    """

    code = "invalid"


class InteractionError(EmbrecError, ValueError):
    """An event that cannot be recorded (unknown kind, bad weight or time); the API answers 400."""

    code = "invalid"


class AnalysisError(EmbrecError, ValueError):
    """A catalogue analysis (clusters, near-duplicates) cannot run: unknown model or encoder,
    a bad parameter, no vectors yet, a missing index."""

    code = "invalid"


class NotEmbedded(EmbrecError, LookupError):
    """The object has no vector yet; the API answers 409.

    ``state`` is ``"pending"`` (queued for a worker), ``"failed"`` (the worker gave up; see the
    outbox) or ``"missing"`` (never queued or not indexable).
    """

    code = "not_embedded"
    status = 409

    def __init__(self, message: str, *, state: str = "missing"):
        super().__init__(message)
        self.state = state

    def details(self) -> dict[str, Any]:
        return {"state": self.state}


class NotRegistered(EmbrecError, LookupError):
    """A model or label that is not registered with embrec; the API answers 404."""

    code = "unknown_type"
    field = "type"
    status = 404


class AlreadyRegistered(EmbrecError, ImproperlyConfigured):
    """A model was registered twice (a configuration error, raised at start-up)."""

    code = "already_registered"
    status = 500


class VersionUnavailable(EmbrecError, ImproperlyConfigured):
    """The live version of an encoder cannot encode in this process (its model files were
    replaced in place, or its class is gone) while a new version is backfilled; queries that
    encode text (search) fail with it and the API answers 503."""

    code = "unavailable"
    status = 503
