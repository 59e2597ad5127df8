"""embrec: embedding-based recommendations for Django models.

Public API::

    import embrec

    @embrec.register(Movie)
    class MovieRecommendable(embrec.Recommendable):
        fields = ["title", "genres"]

    embrec.similar(movie, limit=10)
    embrec.mark_dirty(Movie.objects.filter(year=1995))
"""

from embrec.items import Recommendable
from embrec.registry import (
    AlreadyRegistered,
    NotRegistered,
    register,
    registry,
    unregister,
)

__all__ = [
    "AlreadyRegistered",
    "NotRegistered",
    "Recommendable",
    "mark_dirty",
    "register",
    "registry",
    "similar",
    "unregister",
]


def mark_dirty(queryset_or_objects, *, encoder: str | None = None, force: bool = False) -> int:
    """Queue objects for (re)embedding; for ``QuerySet.update``, ``bulk_create``, raw SQL."""
    from embrec.indexing import mark_dirty as _mark_dirty

    return _mark_dirty(queryset_or_objects, encoder=encoder, force=force)


def similar(obj, *, limit: int | None = None, encoder: str | None = None, request=None):
    """Objects most similar to ``obj`` (see :func:`embrec.queries.similar`)."""
    from embrec.queries import similar as _similar

    return _similar(obj, limit=limit, encoder=encoder, request=request)
