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

from embrec.items import Recommendable
from embrec.registry import (
    AlreadyRegistered,
    NotRegistered,
    register,
    registry,
    unregister,
)

if TYPE_CHECKING:
    from embrec.indexing import mark_dirty
    from embrec.interactions import record_interaction
    from embrec.queries import popular, recommend, search, similar
    from embrec.warmup import preload_encoders

__all__ = [
    "AlreadyRegistered",
    "NotRegistered",
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

#: Public functions and the module that defines them. They are loaded on first use: Django imports
#: this package (``INSTALLED_APPS``) before the app registry is ready, and they live in modules
#: that use the models.
_LAZY = {
    "mark_dirty": "embrec.indexing",
    "popular": "embrec.queries",
    "preload_encoders": "embrec.warmup",
    "recommend": "embrec.queries",
    "record_interaction": "embrec.interactions",
    "search": "embrec.queries",
    "similar": "embrec.queries",
}


def __getattr__(name: str) -> Any:
    """``embrec.similar`` and the other public functions: the functions themselves (signatures
    and docstrings included), loaded from their module the first time one is used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'embrec' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
