"""Popularity: distinct users with a positive interaction on an object.

An object's popularity is the number of distinct users with a positive interaction on it whose
latest positive interaction is within ``EMBREC["POPULARITY_WINDOW_DAYS"]`` (``None``: all time).
The read path uses it to blend popular items into vector results, to rank the popularity
fallback (:func:`embrec.queries.popular`) and to normalise blended scores by the most popular
object a query could return.

The counts are stored, not counted per request. Triggers on the interaction table (migration
``0007``) keep two tables current in the same transaction as every interaction insert, update or
delete, whatever issues it (``record_interaction``, ``bulk_create``, ``QuerySet.update``, a
cascade, raw SQL):

* :class:`~embrec.models.PopularityUser` — one row per (object, user) that counts, with the time
  of the user's latest positive interaction on the object;
* :class:`~embrec.models.PopularityCount` — the number of those rows per object.

A write recomputes only the (object, user) pairs it touched, from the interaction table (one
index probe each): O(1) per event. The window moves forward in :func:`expire_popularity`, which
drops the pairs whose latest positive interaction fell out of it; the sweep task runs it and
every process runs it at most every ``POPULARITY_CACHE_SECONDS`` before it reads popularity, so
a user leaves an object's count at most that long after the window passed them.
:func:`rebuild_popularity` (``manage.py embrec_rebuild_popularity``) recounts everything from the
interaction table: after ``TRUNCATE`` or writes with triggers disabled
(``session_replication_role = replica``, ``pg_restore --disable-triggers``), or to check the
stored counts (``--check``).

A ranking is one SQL statement: the counts table in popularity order, joined to the visible
queryset through the host table's primary-key index, with exclusions in the same statement.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from django.core.exceptions import EmptyResultSet
from django.db import DatabaseError, connections, models, router, transaction
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast
from django.utils import timezone

from embrec.conf import embrec_settings
from embrec.models import Interaction, PopularityCount, PopularityState, PopularityUser
from embrec.scoring import popularity_prior

logger = logging.getLogger("embrec")

__all__ = [
    "Excluded",
    "PopularityRanking",
    "expire_popularity",
    "forget_popularity",
    "max_popularity",
    "popularity_from_interactions",
    "popularity_prior_users",
    "popularity_ranking",
    "popularity_scores",
    "rebuild_popularity",
    "stored_popularity",
    "visible_pks",
]


class Excluded(Protocol):
    """Objects a query leaves out (:class:`embrec.read.scope.Exclusions` is one)."""

    def sql(self, alias: str = "e") -> list[tuple[str, list]]:
        """``(condition, params)`` pairs on ``alias.object_pk``, all true for an object that is
        not excluded."""
        ...


# --------------------------------------------------------------------------- maintenance

_USERS = PopularityUser._meta.db_table
_COUNTS = PopularityCount._meta.db_table
_STATE = PopularityState._meta.db_table
_INTERACTIONS = Interaction._meta.db_table


def _window() -> float | None:
    window = embrec_settings.POPULARITY_WINDOW_DAYS
    return float(window) if window else None


def _cutoff(window: float | None, now: datetime) -> datetime | None:
    return now - timedelta(days=window) if window else None


def rebuild_popularity(using: str | None = None) -> dict:
    """Recount every object's popularity from the interaction table, for the configured window.

    Interaction writes wait while it runs (``LOCK ... IN SHARE MODE``); reads keep the previous
    counts until it commits. Returns ``{"users": pairs counted, "objects": objects counted}``.
    """
    using = using or router.db_for_write(PopularityCount)
    window = _window()
    now = timezone.now()
    cutoff = _cutoff(window, now)
    having = "" if cutoff is None else "HAVING max(created_at) >= %s"
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(f"LOCK TABLE {_INTERACTIONS} IN SHARE MODE")
        cursor.execute(
            f"INSERT INTO {_STATE} (id, window_days, cutoff, rebuilt_at) VALUES (1, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET window_days = EXCLUDED.window_days, "
            "cutoff = EXCLUDED.cutoff, rebuilt_at = EXCLUDED.rebuilt_at",
            [window, cutoff, now],
        )
        cursor.execute(f"DELETE FROM {_USERS}")
        cursor.execute(f"DELETE FROM {_COUNTS}")
        cursor.execute(
            f"INSERT INTO {_USERS} (content_type_id, object_pk, user_id, last_positive_at) "
            f"SELECT content_type_id, object_pk, user_id, max(created_at) FROM {_INTERACTIONS} "
            f"WHERE weight > 0 GROUP BY content_type_id, object_pk, user_id {having}",
            [] if cutoff is None else [cutoff],
        )
        users = cursor.rowcount
        cursor.execute(
            f"INSERT INTO {_COUNTS} (content_type_id, object_pk, users) "
            f"SELECT content_type_id, object_pk, count(*) FROM {_USERS} "
            "GROUP BY content_type_id, object_pk"
        )
        objects = cursor.rowcount
    _forget_using(using)
    return {"users": users, "objects": objects}


def expire_popularity(using: str | None = None, *, now: datetime | None = None) -> int:
    """Move the window forward to ``now`` (default: the current time): drop the (object, user)
    pairs whose latest positive interaction is older than ``POPULARITY_WINDOW_DAYS`` and lower
    their objects' counts. Returns how many pairs were dropped.

    Recounts everything (:func:`rebuild_popularity`) when the stored counts are for another
    window (the setting changed) or were never built. Returns 0 at once when another process is
    moving the window right now.
    """
    using = using or router.db_for_write(PopularityCount)
    window = _window()
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute(
            f"SELECT window_days, cutoff FROM {_STATE} WHERE id = 1 FOR UPDATE SKIP LOCKED"
        )
        row = cursor.fetchone()
        if row is None:
            cursor.execute(f"SELECT 1 FROM {_STATE} WHERE id = 1")
            if cursor.fetchone() is not None:
                return 0  # another process holds it
        if row is None or row[0] != window:
            rebuild_popularity(using)
            return 0
        cutoff = _cutoff(window, now or timezone.now())
        if cutoff is None or (row[1] is not None and cutoff <= row[1]):
            return 0
        cursor.execute(
            f"WITH gone AS (DELETE FROM {_USERS} WHERE last_positive_at < %s "
            "RETURNING content_type_id, object_pk), "
            "dropped AS (SELECT content_type_id, object_pk, count(*) AS n FROM gone "
            "GROUP BY content_type_id, object_pk) "
            f"UPDATE {_COUNTS} c SET users = c.users - d.n FROM dropped d "
            "WHERE c.content_type_id = d.content_type_id AND c.object_pk = d.object_pk "
            "RETURNING c.id, c.users, d.n",
            [cutoff],
        )
        rows = cursor.fetchall()
        empty = [row_id for row_id, users, _ in rows if users <= 0]
        if empty:
            cursor.execute(f"DELETE FROM {_COUNTS} WHERE id = ANY(%s)", [empty])
        cursor.execute(f"UPDATE {_STATE} SET cutoff = %s WHERE id = 1", [cutoff])
    return sum(n for _, _, n in rows)


_window_checks: dict[str, tuple[float | None, float]] = {}
_prior_cache: dict[tuple, tuple[float, float]] = {}
_cache_lock = threading.Lock()


def _keep_window_current() -> None:
    """:func:`expire_popularity` on the write database, at most every
    ``POPULARITY_CACHE_SECONDS`` per process (at once when the window setting changed)."""
    using = router.db_for_write(PopularityCount)
    window = _window()
    now = time.monotonic()
    interval = float(embrec_settings.POPULARITY_CACHE_SECONDS or 0)
    last = _window_checks.get(using)
    if last is not None and last[0] == window and now - last[1] < interval:
        return
    with _cache_lock:
        _window_checks[using] = (window, now)
    try:
        expire_popularity(using)
    except DatabaseError as exc:  # counts stay as they are; the sweep moves the window later
        logger.warning("embrec: could not move the popularity window (%s).", exc)


def _forget_using(using: str) -> None:
    with _cache_lock:
        for key in [k for k in _prior_cache if k[0] == using]:
            del _prior_cache[key]


def forget_popularity() -> None:
    """Forget per-process popularity state (the last window check, the cached prior): tests,
    or after writing the popularity tables directly."""
    with _cache_lock:
        _window_checks.clear()
        _prior_cache.clear()


# --------------------------------------------------------------------------- reading


def _read_db() -> str:
    _keep_window_current()
    return router.db_for_read(PopularityCount)


def _counts(content_type_id: int, using: str) -> models.QuerySet:
    return PopularityCount.objects.using(using).filter(content_type_id=content_type_id, users__gt=0)


def popularity_scores(content_type_id: int, pks: Iterable[str]) -> dict[str, float]:
    """Popularity per object: distinct users with a positive interaction on it (within
    ``POPULARITY_WINDOW_DAYS``). Objects nobody liked are absent."""
    keys = [str(pk) for pk in pks]
    if not keys:
        return {}
    rows = _counts(content_type_id, _read_db()).filter(object_pk__in=keys)
    return {pk: float(users) for pk, users in rows.values_list("object_pk", "users")}


def stored_popularity(content_type_id: int, using: str | None = None) -> dict[str, int]:
    """Every object's stored popularity (the counts table), for checks and reports."""
    using = using or router.db_for_read(PopularityCount)
    return dict(_counts(content_type_id, using).values_list("object_pk", "users"))


def popularity_from_interactions(
    content_type_id: int, using: str | None = None, *, now: datetime | None = None
) -> dict[str, int]:
    """Every object's popularity counted from the interaction table (``COUNT(DISTINCT user)``
    over the window ending at ``now``): what the stored counts must equal."""
    using = using or router.db_for_read(Interaction)
    qs = Interaction.objects.using(using).filter(content_type_id=content_type_id, weight__gt=0)
    cutoff = _cutoff(_window(), now or timezone.now())
    latest = qs.values("object_pk", "user_id").annotate(latest=models.Max("created_at"))
    if cutoff is not None:
        latest = latest.filter(latest__gte=cutoff)
    counted: dict[str, int] = {}
    for row in latest:
        counted[row["object_pk"]] = counted.get(row["object_pk"], 0) + 1
    return counted


def popularity_prior_users(content_type_id: int, quantile: float) -> float:
    """The ``quantile`` of the objects' positive popularity (:func:`embrec.scoring.popularity_prior`),
    cached per process for ``POPULARITY_CACHE_SECONDS``: a distribution changes slowly."""
    using = _read_db()
    key = (using, content_type_id, float(quantile), _window())
    now = time.monotonic()
    cached = _prior_cache.get(key)
    if cached is not None and cached[1] > now:
        return cached[0]
    counts = list(_counts(content_type_id, using).values_list("users", flat=True))
    value = popularity_prior(counts, float(quantile))
    ttl = float(embrec_settings.POPULARITY_CACHE_SECONDS or 0)
    if ttl > 0:
        with _cache_lock:
            _prior_cache[key] = (value, now + ttl)
    return value


def visible_pks(visible: models.QuerySet) -> models.QuerySet:
    """The primary keys of ``visible`` as strings (to compare with ``object_pk``)."""
    qs = visible.order_by().annotate(_pk_str=Cast("pk", models.CharField()))
    return qs.values("_pk_str")


_INTEGER_KEYS = {
    "AutoField",
    "BigAutoField",
    "SmallAutoField",
    "IntegerField",
    "BigIntegerField",
    "SmallIntegerField",
    "PositiveIntegerField",
    "PositiveBigIntegerField",
    "PositiveSmallIntegerField",
}
_TEXT_KEYS = {"CharField", "SlugField", "TextField", "EmailField", "URLField"}
_PATTERNS = {
    "bigint": "^-?[0-9]{1,18}$",
    "uuid": "^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$",
}


def _key_sql(visible: models.QuerySet, column: str) -> str | None:
    """``column`` (an ``object_pk``) as a value of ``visible``'s primary key, so the host table's
    primary-key index finds the row; NULL where the text is no such value (a stray key never
    makes the query fail). ``None`` for key types compared as text only.

    PostgreSQL 16+ checks the text with ``pg_input_is_valid``; older servers with a regular
    expression, which costs ~10× more per row.
    """
    field = visible.model._meta.pk
    while field.is_relation:
        field = field.target_field
    kind = field.get_internal_type()
    if kind in _TEXT_KEYS:
        return column
    db_type = "bigint" if kind in _INTEGER_KEYS else "uuid" if kind == "UUIDField" else None
    if db_type is None:
        return None
    if (getattr(connections[visible.db], "pg_version", None) or 0) >= 160000:
        check = f"pg_input_is_valid({column}, '{db_type}')"
    else:
        check = f"{column} ~ '{_PATTERNS[db_type]}'"
    return f"(CASE WHEN {check} THEN {column}::{db_type} END)"


def _shown_sql(visible: models.QuerySet, alias: str = "c") -> tuple[str, list]:
    """A condition on counts rows ``alias``: their object is in ``visible``.

    A correlated ``EXISTS`` probes the host table's primary key for each counts row read in
    popularity order, so a ranking stops as soon as it has its rows (PostgreSQL turns it into a
    hash join instead when ``visible`` is a small part of the table). Key types without a cast
    compare as text against all visible keys.
    """
    key = _key_sql(visible, f"{alias}.object_pk")
    try:
        if key is None:
            sub_sql, params = visible_pks(visible).query.sql_with_params()
            return f"{alias}.object_pk IN ({sub_sql})", list(params)
        rows = visible.order_by().filter(pk=RawSQL(key, [])).values("pk")
        sub_sql, params = rows.query.sql_with_params()
    except EmptyResultSet:  # Django proved ``visible`` empty
        return "FALSE", []
    return f"EXISTS ({sub_sql})", list(params)


#: Most users first, ties by key in code-point order: the ``embrec_popcount_rank`` index order.
_ORDER = 'ORDER BY c.users DESC, c.object_pk COLLATE "C"'


def max_popularity(content_type_id: int, visible: models.QuerySet) -> float:
    """The popularity of the most popular object in ``visible``: what the blend normalises by,
    so that a score means the same whichever candidates a query happens to look at."""
    using = _read_db()
    shown, params = _shown_sql(visible)
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"SELECT c.users FROM {_COUNTS} c WHERE c.content_type_id = %s AND c.users > 0 "
            f"AND {shown} {_ORDER} LIMIT 1",
            [content_type_id, *params],
        )
        row = cursor.fetchone()
    return float(row[0]) if row else 0.0


@dataclass
class PopularityRanking:
    """Popularity as one query sees it: the ``top`` visible objects by popularity that are not
    excluded, the popularity of those and of the ``skip`` objects (``scores``; objects nobody
    liked are absent), and the maximum over the visible objects (what scores are normalised
    by)."""

    top: list[tuple[str, float]]
    scores: dict[str, float]
    maximum: float


def popularity_ranking(
    content_type_id: int,
    visible: models.QuerySet,
    exclusions: Excluded,
    count: int,
    skip: Sequence[str] = (),
) -> PopularityRanking:
    """The ``count`` most popular objects of ``visible`` not in ``exclusions`` nor ``skip``
    (object keys as strings), most users first (ties by key), the visible maximum, and the
    popularity of the ``skip`` objects (a blend's other candidates).

    One SQL statement: a ``UNION ALL`` of the three over the counts table.
    """
    using = router.db_for_read(PopularityCount)
    sql, params = popularity_ranking_sql(
        content_type_id, visible, exclusions, count, [str(pk) for pk in skip]
    )
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return ranking_from_rows(cursor.fetchall())


def popularity_ranking_sql(
    content_type_id: int,
    visible: models.QuerySet,
    exclusions: Excluded,
    count: int,
    skip: Sequence[str] | str,
) -> tuple[str, list]:
    """The statement of :func:`popularity_ranking`: ``(part, object_pk, users)`` rows (part 0:
    the visible maximum, 1: the top, 2: the ``skip`` objects' popularity) and its parameters.

    ``skip`` may be SQL (a string: a sub-select of keys): the read path then runs this statement
    inside its ANN statement, skipping that statement's own nearest rows, and reads the rows
    with :func:`ranking_from_rows`.
    """
    _keep_window_current()
    skip_sql = isinstance(skip, str)
    shown, shown_params = _shown_sql(visible)
    base = f"FROM {_COUNTS} c WHERE c.content_type_id = %s AND c.users > 0"
    parts = [f"(SELECT 0, c.object_pk, c.users {base} AND {shown} {_ORDER} LIMIT 1)"]
    params: list = [content_type_id, *shown_params]
    skipped = f"c.object_pk IN ({skip})" if skip_sql else "c.object_pk = ANY(%s)"
    skip_params = [] if skip_sql else [list(skip)]
    if count > 0:
        where, where_params = [shown], list(shown_params)
        for sql, sql_params in exclusions.sql("c"):
            where.append(sql)
            where_params += sql_params
        if skip:
            where.append(f"NOT ({skipped})")
            where_params += skip_params
        parts.append(
            f"(SELECT 1, c.object_pk, c.users {base} AND {' AND '.join(where)} {_ORDER} LIMIT %s)"
        )
        params += [content_type_id, *where_params, int(count)]
    if skip:
        parts.append(f"(SELECT 2, c.object_pk, c.users {base} AND {skipped})")
        params += [content_type_id, *skip_params]
    return " UNION ALL ".join(parts), params


def ranking_from_rows(rows: Iterable[tuple[int, str, float]]) -> PopularityRanking:
    """A :class:`PopularityRanking` from the rows of :func:`popularity_ranking_sql`."""
    maximum = 0.0
    top: list[tuple[str, float]] = []
    scores: dict[str, float] = {}
    for part, pk, users in rows:
        if part == 0:
            maximum = float(users)
        elif part == 1:
            top.append((pk, float(users)))
        scores[pk] = float(users)
    # UNION ALL keeps each part's rows but not their order across parts.
    top.sort(key=lambda row: (-row[1], row[0]))
    return PopularityRanking(top=top, scores=scores, maximum=maximum)
