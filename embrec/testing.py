"""Helpers for testing a project that uses embrec: vectors written synchronously, in the test's
own database transaction, by a small deterministic encoder (no model download, no torch, no
Celery worker).

With pytest (and pytest-django), load the fixtures in the project's root ``conftest.py``::

    pytest_plugins = ["embrec.testing"]

    def test_similar_movies(embrec_sync):
        alien = Movie.objects.create(title="Alien")
        aliens = Movie.objects.create(title="Aliens")
        embrec_sync.embed_now()                  # drain the outbox in-process
        assert embrec.similar(alien, limit=1)[0].object == aliens

Without pytest (Django's ``TestCase``)::

    @override_settings(EMBREC=hashing_settings())
    class MovieTests(TestCase):
        def test_similar(self):
            ...
            embed_now()

:func:`hashing_settings` points every configured encoder alias at
:class:`~embrec.encoders.hashing.HashingEncoder` (hashed words and word pairs: texts sharing words
are near, the same text always gives the same vector) and turns ``AUTO_KICK`` off, so saves only
write outbox rows and :func:`embed_now` does the work where the test can see it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import models
from django.test import override_settings

from embrec.indexing import DrainResult, mark_dirty
from embrec.popularity import forget_popularity
from embrec.storage import forget_indexes
from embrec.switching import drain_and_switch

try:
    import pytest
except ImportError:  # Django's test runner: the helpers work, the fixtures are not defined.
    pytest = None  # type: ignore[assignment]

#: The encoder :func:`hashing_settings` uses for every alias.
HASHING_ENCODER: dict[str, Any] = {
    "CLASS": "embrec.encoders.hashing.HashingEncoder",
    "OPTIONS": {"dimensions": 64},
}


def hashing_settings(base: dict[str, Any] | None = None, *, dimensions: int = 64, **overrides):
    """An ``EMBREC`` settings dict for tests: ``base`` (default: the project's ``EMBREC``) with
    every alias of ``ENCODERS`` and ``DEFAULT_ENCODERS`` (and ``"default"``) served by the hashing
    encoder of ``dimensions``, ``AUTO_KICK`` off, then ``overrides`` (other ``EMBREC`` keys)."""
    base = dict(getattr(settings, "EMBREC", {}) if base is None else base)
    aliases = {"default", *base.get("ENCODERS", {}), *base.get("DEFAULT_ENCODERS", ())}
    encoder = {**HASHING_ENCODER, "OPTIONS": {"dimensions": dimensions}}
    return {
        **base,
        "ENCODERS": {alias: dict(encoder) for alias in sorted(aliases)},
        "AUTO_KICK": False,
        **overrides,
    }


def embed_now(
    queryset_or_objects: models.QuerySet | Iterable[models.Model] | None = None,
    *,
    force: bool = False,
) -> DrainResult:
    """Write vectors now, in this process and this transaction.

    Saves and deletes of registered objects already wrote outbox rows (signals); this drains
    them. Pass a queryset or objects to queue them first (after ``bulk_create`` or
    ``QuerySet.update``, which send no signals); ``force`` re-encodes unchanged texts. A new
    encoder identity is backfilled and switched to here too, as workers do
    (:func:`embrec.switching.drain_and_switch`). Returns the
    :class:`~embrec.indexing.DrainResult` (``encoded``, ``failed``, ``errors`` …).
    """
    if queryset_or_objects is not None:
        mark_dirty(queryset_or_objects, force=force)
    return drain_and_switch()


def forget_caches() -> None:
    """Forget per-process caches tied to database contents (known vector indexes, popularity):
    call between tests whose database changes are rolled back."""
    forget_indexes()
    forget_popularity()


@contextmanager
def embrec_sync_settings(**overrides) -> Iterator[dict[str, Any]]:
    """Context manager: :func:`hashing_settings` (with ``overrides``) in effect, caches forgotten
    on entry and exit. Yields the ``EMBREC`` dict in use."""
    value = hashing_settings(**overrides)
    forget_caches()
    try:
        with override_settings(EMBREC=value):
            yield value
    finally:
        forget_caches()


class EmbrecSync:
    """What the ``embrec_sync`` fixture returns."""

    def __init__(self, settings_value: dict[str, Any]):
        #: The ``EMBREC`` settings in effect.
        self.settings = settings_value

    def embed_now(self, queryset_or_objects=None, *, force: bool = False) -> DrainResult:
        """See :func:`embed_now`."""
        return embed_now(queryset_or_objects, force=force)


if pytest is not None:

    @pytest.fixture
    def embrec_sync(db) -> Iterator[EmbrecSync]:
        """Database access plus :func:`hashing_settings` for the test; call
        ``embrec_sync.embed_now()`` after creating objects to write their vectors."""
        with embrec_sync_settings() as value:
            yield EmbrecSync(value)
