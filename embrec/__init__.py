"""embrec: embedding-based recommendations for Django models.

Public API::

    import embrec

    @embrec.register(Movie)
    class MovieRecommendable(embrec.Recommendable):
        fields = ["title", "genres"]

    embrec.similar(movie, limit=10)
    embrec.record_interaction(request.user, movie, "like")
    embrec.recommend(request.user, model=Movie, limit=10, request=request)
    embrec.search("space adventure", model=Movie, filters={"year__gte": 1990})
    embrec.mark_dirty(Movie.objects.filter(year=1995))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from embrec.exceptions import (
    AlreadyRegistered,
    EmbrecError,
    InteractionError,
    NotEmbedded,
    NotRegistered,
    QueryError,
)
from embrec.items import Recommendable
from embrec.registry import register, registry, unregister

if TYPE_CHECKING:
    from collections.abc import Iterable

    from django.db import models

__all__ = [
    "AlreadyRegistered",
    "EmbrecError",
    "InteractionError",
    "NotEmbedded",
    "NotRegistered",
    "QueryError",
    "Recommendable",
    "mark_dirty",
    "popular",
    "preload_encoders",
    "recommend",
    "record_interaction",
    "register",
    "registry",
    "search",
    "similar",
    "unregister",
]


def mark_dirty(
    queryset_or_objects: models.QuerySet | Iterable[models.Model],
    *,
    encoder: str | None = None,
    force: bool = False,
    batch_size: int = 5000,
) -> int:
    """Queue objects for (re)embedding after changes that skip signals.

    Call it after ``QuerySet.update``, ``bulk_create``, raw SQL or imports. Accepts a queryset
    (read by keyset pages of ``batch_size`` pks) or an iterable of instances; ``encoder`` limits
    the work to one alias; ``force`` re-encodes unchanged texts. Writes outbox rows in the current
    transaction and queues one drain task after commit. Returns the number of objects queued.
    """
    from embrec.indexing import mark_dirty as _mark_dirty

    return _mark_dirty(queryset_or_objects, encoder=encoder, force=force, batch_size=batch_size)


def similar(obj, **kwargs):
    """Objects most similar to ``obj`` (see :func:`embrec.queries.similar`)."""
    from embrec.queries import similar as _similar

    return _similar(obj, **kwargs)


def recommend(user, **kwargs):
    """Personal recommendations for ``user`` (see :func:`embrec.queries.recommend`)."""
    from embrec.queries import recommend as _recommend

    return _recommend(user, **kwargs)


def search(text: str, **kwargs):
    """Objects nearest to the encoded ``text`` (see :func:`embrec.queries.search`)."""
    from embrec.queries import search as _search

    return _search(text, **kwargs)


def popular(model=None, **kwargs):
    """Most popular visible objects (see :func:`embrec.queries.popular`)."""
    from embrec.queries import popular as _popular

    return _popular(model, **kwargs)


def preload_encoders(aliases=None) -> dict[str, float]:
    """Load encoders now (see :func:`embrec.warmup.preload_encoders`); call it in ``wsgi.py``."""
    from embrec.warmup import preload_encoders as _preload

    return _preload(aliases)


def record_interaction(user, obj, kind: str, weight: float | None = None, at=None):
    """Record a user's event on an object (see :func:`embrec.interactions.record_interaction`)."""
    from embrec.interactions import record_interaction as _record

    return _record(user, obj, kind, weight=weight, at=at)
