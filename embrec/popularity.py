"""Popularity: distinct users with a positive interaction on an object.

An object's popularity is the number of distinct users with a positive interaction on it
(within ``EMBREC["POPULARITY_WINDOW_DAYS"]``). The read path uses it to blend popular items into
vector results, to rank the popularity fallback (:func:`embrec.queries.popular`) and to normalise
blended scores by the most popular object a query could return.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from django.core.exceptions import ValidationError
from django.db import models, router
from django.db.models import Count, Max, Q
from django.db.models.functions import Cast
from django.utils import timezone

from embrec.conf import embrec_settings
from embrec.models import Interaction

__all__ = [
    "Excluded",
    "PopularityRanking",
    "PopularityTable",
    "forget_popularity",
    "max_popularity",
    "popularity_ranking",
    "popularity_scores",
    "popularity_table",
    "visible_pks",
]


class Excluded(Protocol):
    """Objects a query leaves out (:class:`embrec.queries.Exclusions` is one)."""

    def pk_set(self) -> set[str]:
        """The excluded object keys, as strings."""
        ...

    def q(self, field_name: str = "object_pk") -> Q:
        """A condition matching the excluded objects by their ``field_name`` column."""
        ...


@dataclass
class PopularityTable:
    """Popularity of every object of one model: ``ranked`` most users first (ties by key) and
    ``users`` per object key. Built by one aggregate query and cached per process."""

    ranked: list[tuple[str, float]]
    users: dict[str, float]
    expires: float


_popularity_tables: dict[tuple, PopularityTable] = {}
_popularity_lock = threading.Lock()


def popularity_table(content_type_id: int, using: str | None = None) -> PopularityTable:
    """The cached :class:`PopularityTable` of a content type.

    Counting distinct users per object over the whole interaction table costs ~100 ms at 100k
    interactions, too much for every request. The table is rebuilt when an interaction was added
    since (the newest interaction id is part of the cache key: one index probe per call) and at
    the latest every ``POPULARITY_CACHE_SECONDS`` (deletions, the sliding window).
    """
    using = using or router.db_for_read(Interaction)
    newest = (
        Interaction.objects.using(using)
        .filter(content_type_id=content_type_id)
        .aggregate(newest=Max("id"))["newest"]
    )
    window = embrec_settings.POPULARITY_WINDOW_DAYS
    key = (using, content_type_id, window, newest)
    now = time.monotonic()
    table = _popularity_tables.get(key)
    if table is not None and table.expires > now:
        return table
    rows = list(_popularity_qs(content_type_id).using(using).values_list("object_pk", "popularity"))
    ranked = sorted(((pk, float(p)) for pk, p in rows), key=lambda row: (-row[1], row[0]))
    ttl = float(embrec_settings.POPULARITY_CACHE_SECONDS or 0)
    table = PopularityTable(ranked=ranked, users=dict(ranked), expires=now + ttl)
    with _popularity_lock:
        for old in [k for k in _popularity_tables if k[:2] == key[:2]]:
            del _popularity_tables[old]
        if ttl > 0:
            _popularity_tables[key] = table
    return table


def forget_popularity() -> None:
    """Drop cached popularity tables (tests, or after bulk-deleting interactions)."""
    with _popularity_lock:
        _popularity_tables.clear()


def popularity_scores(content_type_id: int, pks: Iterable[str]) -> dict[str, float]:
    """Popularity per object: distinct users with a positive interaction on it (within
    ``POPULARITY_WINDOW_DAYS``). Objects nobody liked are absent."""
    users = popularity_table(content_type_id).users
    return {pk: users[pk] for pk in pks if pk in users}


def _popularity_qs(content_type_id: int) -> models.QuerySet:
    qs = Interaction.objects.filter(content_type_id=content_type_id, weight__gt=0)
    window = embrec_settings.POPULARITY_WINDOW_DAYS
    if window:
        qs = qs.filter(created_at__gte=timezone.now() - timedelta(days=float(window)))
    return qs.values("object_pk").annotate(popularity=Count("user_id", distinct=True))


def visible_pks(visible: models.QuerySet) -> models.QuerySet:
    """The primary keys of ``visible`` as strings (to compare with ``object_pk``)."""
    qs = visible.order_by().annotate(_pk_str=Cast("pk", models.CharField()))
    return qs.values("_pk_str")


#: Popular objects checked for visibility per query while walking the cached ranking; a
#: restriction that hides most of them switches to one aggregate query instead.
_VISIBILITY_PROBE = 500
_VISIBILITY_PROBES = 3


def _popular_visible(
    visible: models.QuerySet,
    ranked: list[tuple[str, float]],
    count: int,
    excluded: set[str] = frozenset(),
) -> tuple[float, list[tuple[str, float]]] | None:
    """Walk ``ranked`` (most popular first), checking visibility a chunk at a time.

    Returns ``(maximum, top)``: the popularity of the first visible object (0.0 if none) and the
    first ``count`` visible objects not in ``excluded``. ``None`` when the first
    ``_VISIBILITY_PROBES`` chunks do not settle it (a restriction that hides most popular
    objects): the caller then asks one aggregate query instead.
    """
    pk_field = visible.model._meta.pk
    maximum: float | None = None
    top: list[tuple[str, float]] = []
    for start in range(0, _VISIBILITY_PROBES * _VISIBILITY_PROBE, _VISIBILITY_PROBE):
        chunk = ranked[start : start + _VISIBILITY_PROBE]
        if not chunk:
            break
        keys = []
        for pk, _ in chunk:
            try:
                keys.append(pk_field.to_python(pk))
            except ValidationError:
                continue
        shown = {str(pk) for pk in visible.filter(pk__in=keys).values_list("pk", flat=True)}
        for pk, users in chunk:
            if pk not in shown:
                continue
            if maximum is None:
                maximum = users
            if len(top) < count and pk not in excluded:
                top.append((pk, users))
            if len(top) >= count:
                return maximum, top
    else:
        if len(ranked) > _VISIBILITY_PROBES * _VISIBILITY_PROBE:
            return None
    return maximum or 0.0, top


def max_popularity(content_type_id: int, visible: models.QuerySet) -> float:
    """The popularity of the most popular object in ``visible``: what the blend normalises by,
    so that a score means the same whichever candidates a query happens to look at."""
    head = _popular_visible(visible, popularity_table(content_type_id).ranked, 0)
    if head is not None:
        return head[0]
    top = (
        _popularity_qs(content_type_id)
        .filter(object_pk__in=visible_pks(visible))
        .aggregate(top=Max("popularity"))["top"]
    )
    return float(top or 0.0)


@dataclass
class PopularityRanking:
    """Popularity as one query sees it: the ``top`` visible objects by popularity that are not
    excluded, the popularity of every object (``scores``), and the maximum over the visible
    objects (what scores are normalised by)."""

    top: list[tuple[str, float]]
    scores: dict[str, float]
    maximum: float


def popularity_ranking(
    content_type_id: int,
    visible: models.QuerySet,
    exclusions: Excluded,
    count: int,
    skip: Iterable[str] = (),
) -> PopularityRanking:
    """The ``count`` most popular objects of ``visible`` not in ``exclusions`` nor ``skip``
    (object keys as strings), most users first (ties by key), and the visible maximum.

    Walks the cached :func:`popularity_table` and checks visibility a few hundred objects at a
    time; when the restriction hides most popular objects it falls back to one aggregate query.
    """
    excluded = exclusions.pk_set() | {str(pk) for pk in skip}
    table = popularity_table(content_type_id)
    head = _popular_visible(visible, table.ranked, count, excluded)
    if head is not None:
        maximum, top = head
    else:
        rows = list(
            _popularity_qs(content_type_id)
            .filter(object_pk__in=visible_pks(visible))
            .order_by("-popularity", "object_pk")
            .values_list("object_pk", "popularity")[: max(count, 1) + len(excluded)]
        )
        top = [(pk, float(p)) for pk, p in rows if pk not in excluded][:count]
        maximum = float(rows[0][1]) if rows else 0.0
    return PopularityRanking(top=top, scores=table.users, maximum=float(maximum))
