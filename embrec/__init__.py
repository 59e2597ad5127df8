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

from importlib import import_module
from typing import TYPE_CHECKING, Any

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
    from embrec.indexing import mark_dirty
    from embrec.interactions import record_interaction
    from embrec.queries import popular, recommend, search, similar
    from embrec.read.results import Explanation, Result
    from embrec.warmup import preload_encoders

__all__ = [
    "AlreadyRegistered",
    "EmbrecError",
    "Explanation",
    "InteractionError",
    "NotEmbedded",
    "NotRegistered",
    "QueryError",
    "Recommendable",
    "Result",
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

#: Public names defined in modules that use the models. Django imports this package before the
#: models are ready, so these load on first use (PEP 562), as the functions themselves: their
#: signatures and docstrings are the real ones.
_LAZY = {
    "Explanation": "embrec.read.results",
    "Result": "embrec.read.results",
    "mark_dirty": "embrec.indexing",
    "popular": "embrec.queries",
    "preload_encoders": "embrec.warmup",
    "recommend": "embrec.queries",
    "record_interaction": "embrec.interactions",
    "search": "embrec.queries",
    "similar": "embrec.queries",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'embrec' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
