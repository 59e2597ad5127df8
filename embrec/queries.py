"""The read path: similar items, personal recommendations, semantic search and popularity.

Every vector query runs one ordered ANN search over the partial HNSW index of its (model, encoder)
(:class:`embrec.storage.IndexSpec`), restricted in the same SQL statement to what the caller may
see (the registration's :meth:`~embrec.Recommendable.get_visible_queryset` plus validated filters)
and to what the user has not disliked (or seen). pgvector's iterative index scans
(``hnsw.iterative_scan``, pgvector >= 0.8) keep scanning the index until ``limit`` rows pass those
conditions. An optional re-ranking step blends in popularity and recency and/or diversifies the
list (maximal marginal relevance); host objects are then loaded in one query, keeping the order.

Public functions: :func:`similar`, :func:`recommend`, :func:`search`, :func:`popular`. Each returns
a list of :class:`Result`; each result says where it came from (``source``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import EmptyResultSet, ImproperlyConfigured, ValidationError
from django.db import connections, models, router, transaction
from django.db.models import Count, Max, Q
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast
from django.utils import timezone

from embrec.conf import embrec_settings
from embrec.items import Recommendable
from embrec.models import Embedding, Interaction, OutboxEntry
from embrec.registry import registry
from embrec.scoring import (
    blend_scores,
    normalized_popularity,
    popularity_prior,
    smoothed_popularity,
)
from embrec.storage import IndexSpec, parse_vector, vector_literal
from embrec.versions import ReadVersion, read_version

#: Lookups a filter may use, on fields listed in ``Recommendable.filter_fields``.
FILTER_LOOKUPS = ("exact", "iexact", "in", "gt", "gte", "lt", "lte", "isnull")

#: Result sources.
SOURCE_SIMILAR = "similar"
SOURCE_PERSONAL = "personal"
SOURCE_SEARCH = "search"
SOURCE_POPULAR = "popular"
SOURCE_RECENT = "recent"

#: How many interacted items an explanation lists.
EXPLANATION_SIZE = 3


class QueryError(ValueError):
    """Bad query input (limit, filters, text, re-ranking options); the API answers 400.

    ``code`` is a short machine-readable reason, ``field`` the parameter at fault.
    """

    def __init__(self, message: str, *, code: str = "invalid", field: str | None = None):
        super().__init__(message)
        self.code = code
        self.field = field


class NotEmbedded(LookupError):
    """The object has no vector yet. ``state`` is ``"pending"`` (queued for a worker),
    ``"failed"`` (the worker gave up; see the outbox) or ``"missing"`` (never queued or not
    indexable)."""

    def __init__(self, message: str, *, state: str = "missing"):
        super().__init__(message)
        self.state = state


@dataclass
class Explanation:
    """An interacted item that contributed to a personal result."""

    object: Any
    pk: str
    kind: str
    weight: float
    contribution: float


@dataclass
class Result:
    """One ranked object.

    ``score`` is the final ranking score (the cosine ``similarity`` unless popularity or recency
    were blended in; for popularity results, the normalised popularity). ``source`` is one of
    ``"similar"``, ``"personal"``, ``"search"``, ``"popular"``, ``"recent"``.
    """

    object: Any
    score: float
    source: str
    similarity: float | None = None
    explanation: list[Explanation] | None = None

    @property
    def pk(self) -> str:
        return str(self.object.pk)


@dataclass
class Candidate:
    """One row of an ANN search."""

    pk: str
    distance: float
    created_at: datetime | None = None
    vector: np.ndarray | None = None
    score: float = 0.0

    @property
    def similarity(self) -> float:
        return 1.0 - self.distance


@dataclass
class Exclusions:
    """Objects left out of a query: explicit pks, and a user's disliked (or all seen) items."""

    pks: list[str] = field(default_factory=list)
    user_id: Any = None
    content_type_id: int | None = None
    seen: bool = False

    def sql(self, alias: str = "e") -> list[tuple[str, list]]:
        """``NOT`` conditions for the ANN query. ``NOT IN (subquery)`` stays a hashed filter on
        the index scan (PostgreSQL never turns it into an anti-join), so the HNSW order is kept."""
        parts: list[tuple[str, list]] = []
        if self.pks:
            parts.append((f"NOT ({alias}.object_pk = ANY(%s))", [list(self.pks)]))
        if self.user_id is not None:
            weight = "" if self.seen else " AND i.weight < 0"
            parts.append(
                (
                    f"{alias}.object_pk NOT IN (SELECT i.object_pk FROM "
                    f"{Interaction._meta.db_table} i WHERE i.user_id = %s "
                    f"AND i.content_type_id = %s{weight})",
                    [self.user_id, self.content_type_id],
                )
            )
        return parts

    def pk_set(self) -> set[str]:
        """The excluded primary keys as strings (one indexed query for the user's part)."""
        excluded = {str(pk) for pk in self.pks}
        if self.user_id is not None:
            inter = Interaction.objects.filter(
                user_id=self.user_id, content_type_id=self.content_type_id
            )
            if not self.seen:
                inter = inter.filter(weight__lt=0)
            excluded.update(inter.values_list("object_pk", flat=True))
        return excluded

    def q(self, field_name: str = "object_pk") -> Q:
        """The same exclusions for ORM queries over a table with an ``object_pk`` column."""
        q = Q()
        if self.pks:
            q |= Q(**{f"{field_name}__in": list(self.pks)})
        if self.user_id is not None:
            inter = Interaction.objects.filter(
                user_id=self.user_id, content_type_id=self.content_type_id
            )
            if not self.seen:
                inter = inter.filter(weight__lt=0)
            q |= Q(**{f"{field_name}__in": inter.values("object_pk")})
        return q


# --------------------------------------------------------------------------- input validation


def clean_limit(limit: Any) -> int:
    """``limit`` as an int in ``1..EMBREC["MAX_LIMIT"]``; ``None`` gives ``DEFAULT_LIMIT``."""
    maximum = int(embrec_settings.MAX_LIMIT)
    if limit is None or limit == "":
        return min(int(embrec_settings.DEFAULT_LIMIT), maximum)
    if isinstance(limit, bool):
        raise QueryError("limit must be an integer.", code="invalid_limit", field="limit")
    try:
        value = int(limit) if not isinstance(limit, float) or limit.is_integer() else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        raise QueryError(
            f"limit must be an integer, got {limit!r}.", code="invalid_limit", field="limit"
        )
    if value <= 0 or value > maximum:
        raise QueryError(
            f"limit must be between 1 and {maximum}, got {value}.",
            code="invalid_limit",
            field="limit",
        )
    return value


def clean_fraction(value: Any, name: str, *, allow_none: bool = False) -> float | None:
    """A float in ``[0, 1]`` (``mmr_lambda``, ``popularity``, ``recency``)."""
    if value is None or value == "":
        return None if allow_none else 0.0
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (0.0 <= number <= 1.0):
        raise QueryError(f"{name} must be a number between 0 and 1, got {value!r}.", field=name)
    return number


def clean_ranking(
    mmr_lambda: Any, popularity: Any, recency: Any
) -> tuple[float | None, float, float]:
    """Validate the re-ranking options: each in ``[0, 1]``, ``popularity + recency <= 1``."""
    mmr_value = clean_fraction(mmr_lambda, "mmr_lambda", allow_none=True)
    pop = clean_fraction(popularity, "popularity")
    rec = clean_fraction(recency, "recency")
    if pop + rec > 1.0:
        raise QueryError(
            "popularity + recency must not exceed 1 (the rest is the similarity's share).",
            field="popularity",
        )
    return mmr_value, pop, rec


def clean_text(text: Any) -> str:
    """Search text: non-blank and at most ``EMBREC["SEARCH_MAX_LENGTH"]`` characters."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("The search text must not be empty.", code="empty_query", field="q")
    maximum = int(embrec_settings.SEARCH_MAX_LENGTH)
    if len(text) > maximum:
        raise QueryError(
            f"The search text is longer than {maximum} characters ({len(text)}).",
            code="query_too_long",
            field="q",
        )
    return text.strip()


def parse_filters(rec: Recommendable, filters: Mapping[str, Any] | None) -> Q:
    """Validate ``{"field__lookup": value}`` against ``rec.filter_fields`` and return a ``Q``.

    Only fields the registration declares are accepted, with the lookups in
    :data:`FILTER_LOOKUPS`; values are converted by the model field (``"12.5"`` for a decimal),
    ``in`` takes a list or a comma-separated string. Anything else raises :class:`QueryError`;
    nothing unvalidated reaches SQL, and values are always bound parameters.
    """
    q = Q()
    if not filters:
        return q
    allowed = list(rec.filter_fields)
    # Longest first: "category__slug__in" is the path "category__slug" with the lookup "in".
    by_length = sorted(allowed, key=len, reverse=True)
    for key, raw in filters.items():
        name = next((n for n in by_length if str(key) == n or str(key).startswith(f"{n}__")), None)
        lookup = str(key)[len(name) + 2 :] if name else ""
        lookup = lookup or "exact"
        if name is None:
            known = ", ".join(allowed) or "none"
            raise QueryError(
                f"Unknown filter {key!r} for {rec.label} (filterable fields: {known}).",
                code="unknown_filter",
                field=str(key),
            )
        if lookup not in FILTER_LOOKUPS:
            raise QueryError(
                f"Unsupported lookup {lookup!r} in filter {key!r} "
                f"(supported: {', '.join(FILTER_LOOKUPS)}).",
                code="unknown_filter",
                field=str(key),
            )
        model_field = rec.get_filter_field(name)
        if lookup == "iexact" and not isinstance(_target(model_field), _TEXT_FIELDS):
            # Case does not apply to numbers or dates; PostgreSQL has no UPPER() for them.
            lookup = "exact"
        try:
            if lookup == "isnull":
                value: Any = _to_bool(raw, str(key))
            elif lookup == "in":
                items = raw.split(",") if isinstance(raw, str) else list(raw)
                value = [_convert(model_field, item) for item in items]
            else:
                value = _convert(model_field, raw)
        except (ValidationError, TypeError, ValueError) as exc:
            message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            raise QueryError(
                f"Invalid value {raw!r} for filter {key!r}: {message}",
                code="invalid_filter",
                field=str(key),
            ) from None
        q &= Q(**{f"{name}__{lookup}": value})
    return q


_TEXT_FIELDS = (models.CharField, models.TextField)


def _target(model_field: models.Field) -> models.Field:
    """The field whose column holds the value (a foreign key's target)."""
    if getattr(model_field, "remote_field", None) is not None:
        return model_field.target_field
    return model_field


def _convert(model_field: models.Field, value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
    return clean_value(model_field, value)


def clean_value(model_field: models.Field, value: Any, *, using: str | None = None) -> Any:
    """``value`` (user input, usually text) as a Python value that ``model_field``'s database
    column can hold, or :class:`~django.core.exceptions.ValidationError`.

    The field's own ``to_python`` converts; then what the database would reject or Django would
    compile to "no rows" is refused here, so no user input turns into a database error: integers
    outside the column's range (``integer_field_range`` of the connection), decimals that are
    not finite or have more whole digits than the column, and text with NUL characters.
    """
    if getattr(model_field, "remote_field", None) is not None:
        model_field = model_field.target_field
    if isinstance(value, str) and "\x00" in value:
        raise ValidationError("NUL characters are not allowed")
    converted = model_field.to_python(value)
    if converted is None:
        if not model_field.null:
            raise ValidationError("a value is required")
        return None
    if isinstance(converted, str) and "\x00" in converted:
        raise ValidationError("NUL characters are not allowed")
    connection = connections[using or router.db_for_read(model_field.model)]
    internal = model_field.get_internal_type()
    if isinstance(converted, int) and not isinstance(converted, bool):
        try:
            low, high = connection.ops.integer_field_range(internal)
        except KeyError:  # not an integer column
            low = high = None
        if (low is not None and converted < low) or (high is not None and converted > high):
            raise ValidationError(f"out of range for this field ({low}..{high})")
    if isinstance(converted, Decimal):
        if not converted.is_finite():
            raise ValidationError("must be a finite number")
        max_digits = getattr(model_field, "max_digits", None)
        places = getattr(model_field, "decimal_places", None) or 0
        if max_digits is not None and converted.adjusted() + 1 > max_digits - places:
            limit = Decimal(10) ** (max_digits - places)
            raise ValidationError(f"out of range for this field (|value| < {limit})")
    return converted


def _to_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise QueryError(f"{name} must be true or false, got {value!r}.", field=name)


def get_registration(model: Any = None) -> Recommendable:
    """The registration for a model, instance or label; with ``None``, the only one there is."""
    if model is not None:
        return model if isinstance(model, Recommendable) else registry.get(model)
    registrations = registry.all()
    if len(registrations) == 1:
        return registrations[0]
    known = ", ".join(sorted(r.label for r in registrations)) or "none"
    raise QueryError(
        f"Say which registered model to query (registered: {known}).",
        code="type_required",
        field="type",
    )


# --------------------------------------------------------------------------- pgvector


_pgvector_versions: dict[str, tuple[int, ...]] = {}


def pgvector_version(using: str = "default") -> tuple[int, ...]:
    """The installed pgvector extension version, e.g. ``(0, 8, 0)`` (cached per database)."""
    if using not in _pgvector_versions:
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
        if row is None:
            raise ImproperlyConfigured(f"The pgvector extension is not installed in {using!r}.")
        _pgvector_versions[using] = tuple(int(p) for p in row[0].split(".") if p.isdigit())
    return _pgvector_versions[using]


def _check_pgvector(using: str) -> None:
    version = pgvector_version(using)
    if version < (0, 8):
        raise ImproperlyConfigured(
            f"embrec needs pgvector >= 0.8 for iterative index scans; database {using!r} has "
            f"{'.'.join(map(str, version))}. Run ALTER EXTENSION vector UPDATE after upgrading."
        )


def _scan_settings(cursor, limit: int, ef_search: int | None) -> None:
    ef = max(int(ef_search or embrec_settings.EF_SEARCH), int(limit))
    cursor.execute(f"SET LOCAL hnsw.ef_search = {min(ef, 1000)}")
    mode = str(embrec_settings.ITERATIVE_SCAN)
    if mode not in {"off", "strict_order", "relaxed_order"}:
        raise ImproperlyConfigured(
            "EMBREC['ITERATIVE_SCAN'] must be 'off', 'strict_order' or 'relaxed_order'."
        )
    cursor.execute(f"SET LOCAL hnsw.iterative_scan = {mode}")
    max_tuples = embrec_settings.MAX_SCAN_TUPLES
    if max_tuples:
        cursor.execute(f"SET LOCAL hnsw.max_scan_tuples = {int(max_tuples)}")


def _visible_sql(visible: models.QuerySet | None, alias: str = "e") -> tuple[str, list] | None:
    """A condition on ``alias.object_pk`` that holds for objects of ``visible``.

    Written as a correlated ``EXISTS`` that looks each candidate up by primary key (one index
    probe per row the HNSW scan returns, whatever the size of the visible set), wrapped in
    ``IS TRUE`` so that PostgreSQL keeps it as a filter on the index scan instead of turning it
    into a join (a join would need a sort and lose the index order). ``OFFSET 0`` keeps the
    sub-select from being simplified: without it PostgreSQL may plan the ``EXISTS`` as a hashed
    sub-plan that reads the whole visible table on every query (measured at 100k objects: ~27 ms
    instead of ~1-3 ms per query).
    """
    if visible is None or not visible.query.where:
        return None
    pk = visible.model._meta.pk
    db_type = pk.rel_db_type(connections[visible.db])
    if not db_type:
        return None
    column = f"{alias}.object_pk"
    if pk.get_internal_type() not in {"CharField", "TextField", "SlugField"}:
        column = f"CAST({column} AS {db_type})"
    try:
        sub_sql, sub_params = (
            visible.order_by().filter(pk=RawSQL(column, [])).values("pk").query.sql_with_params()
        )
    except EmptyResultSet:
        # Django proved the queryset empty (e.g. ``pk__in=[]``): no object is visible.
        return "FALSE", []
    return f"(EXISTS ({sub_sql} OFFSET 0)) IS TRUE", list(sub_params)


def nearest_sql(
    spec: IndexSpec,
    vector: np.ndarray,
    limit: int,
    *,
    exclusions: Exclusions | None = None,
    visible: models.QuerySet | None = None,
    with_vectors: bool = False,
) -> tuple[str, list]:
    """The SQL and parameters of one ANN query (see :func:`nearest`)."""
    where = [spec.predicate_sql("e")]
    params: list[Any] = []
    for sql, sql_params in (exclusions or Exclusions()).sql("e"):
        where.append(sql)
        params.extend(sql_params)
    restriction = _visible_sql(visible, "e")
    if restriction is not None:
        where.append(restriction[0])
        params.extend(restriction[1])
    columns = "e.object_pk, {dist} AS distance, e.created_at".format(dist=spec.distance_sql("e"))
    if with_vectors:
        columns += ", e.vector"
    sql = (
        f"SELECT {columns} FROM embrec_embedding e WHERE {' AND '.join(where)} "
        f"ORDER BY distance LIMIT %s"
    )
    return sql, [vector_literal(vector), *params, int(limit)]


def nearest(
    spec: IndexSpec,
    vector: np.ndarray,
    limit: int,
    *,
    exclusions: Exclusions | None = None,
    visible: models.QuerySet | None = None,
    ef_search: int | None = None,
    with_vectors: bool = False,
    using: str | None = None,
) -> list[Candidate]:
    """The ``limit`` nearest vectors to ``vector`` (cosine distance), via the HNSW index.

    ``visible`` (a queryset of the host model) and ``exclusions`` restrict the rows inside the
    same statement; iterative index scans keep the result full when they remove candidates.
    """
    using = using or router.db_for_read(Embedding)
    _check_pgvector(using)
    sql, params = nearest_sql(
        spec, vector, limit, exclusions=exclusions, visible=visible, with_vectors=with_vectors
    )
    conn = connections[using]
    with transaction.atomic(using=using), conn.cursor() as cursor:
        if with_vectors:
            from embrec.storage import _register_vector

            _register_vector(conn)
        _scan_settings(cursor, limit, ef_search)
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    candidates = [
        Candidate(
            pk=row[0],
            distance=float(row[1]),
            created_at=row[2],
            vector=parse_vector(row[3]) if with_vectors else None,
        )
        for row in rows
    ]
    # relaxed_order may return rows slightly out of order; restore it.
    candidates.sort(key=lambda c: (c.distance, c.pk))
    return candidates


def explain(
    spec: IndexSpec,
    vector: np.ndarray,
    limit: int,
    *,
    exclusions: Exclusions | None = None,
    visible: models.QuerySet | None = None,
    ef_search: int | None = None,
    analyze: bool = False,
    using: str | None = None,
) -> str:
    """PostgreSQL's plan for the query :func:`nearest` runs (to check the HNSW index is used)."""
    using = using or router.db_for_read(Embedding)
    sql, params = nearest_sql(spec, vector, limit, exclusions=exclusions, visible=visible)
    prefix = "EXPLAIN (ANALYZE, COSTS OFF) " if analyze else "EXPLAIN "
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        _scan_settings(cursor, limit, ef_search)
        cursor.execute(prefix + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def index_spec(
    rec: Recommendable, encoder: str, dimensions: int, version: ReadVersion | None = None
) -> IndexSpec:
    """The :class:`IndexSpec` of a registration's vectors of the live version of ``encoder``
    (or of ``version``, looked up once by the caller); no model is loaded."""
    ct = ContentType.objects.get_for_model(rec.model, for_concrete_model=False)
    return (version or read_version(encoder)).spec(ct.id, dimensions)


def _encoder_for(rec: Recommendable, encoder: str | None) -> str:
    encoders = rec.get_encoders()
    if encoder is None:
        return encoders[0]
    if encoder not in encoders:
        raise QueryError(
            f"{rec.label} is not embedded with encoder {encoder!r} (it uses {', '.join(encoders)}).",
            code="unknown_encoder",
            field="encoder",
        )
    return encoder


def _text_encoder_for(rec: Recommendable, encoder: str | None) -> str:
    """The encoder that embeds search text: the given one, the registration's
    ``search_encoder``, or its first text encoder."""
    from embrec.encoders import get_encoder

    if encoder is not None:
        alias = _encoder_for(rec, encoder)
        if not get_encoder(alias).uses_text:
            raise QueryError(
                f"Encoder {alias!r} learns from interactions and cannot embed search text.",
                code="unknown_encoder",
                field="encoder",
            )
        return alias
    if rec.search_encoder and rec.search_encoder in rec.get_encoders():
        return _text_encoder_for(rec, rec.search_encoder)
    for alias in rec.get_encoders():
        if get_encoder(alias).uses_text:
            return alias
    raise QueryError(
        f"None of {rec.label}'s encoders embeds text, so it cannot be searched.",
        code="search_unavailable",
        field="type",
    )


def get_vector(obj: models.Model, encoder: str) -> tuple[np.ndarray, IndexSpec]:
    """The stored vector of ``obj`` under the live version of ``encoder`` and that version's
    index; :class:`NotEmbedded` when there is none."""
    rec = registry.get(obj)
    ct = ContentType.objects.get_for_model(obj, for_concrete_model=False)
    version = read_version(encoder)
    rows = Embedding.objects.filter(content_type=ct, object_pk=str(obj.pk), encoder=encoder)
    if version.identity is not None:
        rows = rows.filter(identity=version.identity)
    row = rows.values_list("vector", "dimensions").first()
    if row is None:
        outbox = OutboxEntry.objects.filter(content_type=ct, object_pk=str(obj.pk))
        if outbox.filter(state=OutboxEntry.PENDING).exists():
            state, why = "pending", "it is queued for embedding; try again shortly"
        elif outbox.filter(state=OutboxEntry.FAILED).exists():
            state, why = "failed", "embedding it failed; see the embrec outbox"
        else:
            state, why = "missing", "it has not been queued for embedding (run embrec_reindex)"
        raise NotEmbedded(
            f"{obj._meta.label_lower} {obj.pk} has no {encoder!r} embedding yet: {why}.",
            state=state,
        )
    return parse_vector(row[0]), index_spec(rec, encoder, int(row[1]), version)


# --------------------------------------------------------------------------- ranking


def _user_id(user) -> Any:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.pk


def _request_user(request) -> Any:
    return getattr(request, "user", None) if request is not None else None


def _visible(rec: Recommendable, request, filters: Mapping[str, Any] | None) -> models.QuerySet:
    q = parse_filters(rec, filters)
    visible = rec.get_visible_queryset(request)
    return visible.filter(q) if q else visible


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


def _visible_pks(visible: models.QuerySet) -> models.QuerySet:
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
        .filter(object_pk__in=_visible_pks(visible))
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
    exclusions: Exclusions,
    count: int,
    skip: Iterable[str] = (),
) -> PopularityRanking:
    """The ``count`` most popular objects of ``visible`` not in ``exclusions`` nor ``skip``
    (most users first, ties by key), and the visible maximum.

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
            .filter(object_pk__in=_visible_pks(visible))
            .order_by("-popularity", "object_pk")
            .values_list("object_pk", "popularity")[: max(count, 1) + len(excluded)]
        )
        top = [(pk, float(p)) for pk, p in rows if pk not in excluded][:count]
        maximum = float(rows[0][1]) if rows else 0.0
    return PopularityRanking(top=top, scores=table.users, maximum=float(maximum))


def _blend(
    candidates: list[Candidate],
    content_type_id: int,
    popularity: float,
    recency: float,
    ranking: PopularityRanking | None = None,
) -> None:
    """Score ``candidates`` with :func:`embrec.scoring.blend_scores`. Popularity is normalised by
    ``ranking.maximum`` (the most popular visible object) when given, else by the candidates'."""
    for c in candidates:
        c.score = c.similarity
    if not candidates or (not popularity and not recency):
        return
    pops: dict[str, float] = {}
    top = 0.0
    if popularity:
        if ranking is not None:  # its scores cover every object already
            scores, top = ranking.scores, ranking.maximum
        else:
            scores = popularity_scores(content_type_id, [c.pk for c in candidates])
        pops = {c.pk: scores.get(c.pk, 0.0) for c in candidates}
        top = max(top, *pops.values())
    # Items with little or no history are shrunk towards a prior (POPULARITY_PRIOR), so a new
    # item is not ranked as if nobody would ever want it.
    prior, strength = 0.0, 0.0
    quantile = embrec_settings.POPULARITY_PRIOR
    if popularity and quantile is not None:
        users = ranking.scores if ranking is not None else popularity_table(content_type_id).users
        prior = popularity_prior(list(users.values()), float(quantile))
        strength = float(embrec_settings.POPULARITY_PRIOR_STRENGTH)
    half_life = float(embrec_settings.RECENCY_HALF_LIFE_DAYS or 0)
    now = timezone.now()
    for c in candidates:
        pop = float(smoothed_popularity(pops.get(c.pk, 0.0), top, prior, strength))
        fresh = 0.0
        if recency and c.created_at is not None and half_life > 0:
            age_days = max((now - c.created_at).total_seconds(), 0.0) / 86400.0
            fresh = 0.5 ** (age_days / half_life)
        c.score = float(blend_scores(c.similarity, popularity, pop, recency, fresh))


def candidates_for(
    spec: IndexSpec,
    vector: np.ndarray,
    pks: Sequence[str],
    *,
    with_vectors: bool = False,
    using: str | None = None,
) -> list[Candidate]:
    """Candidates for given objects (those with a vector in ``spec``), with their distance to
    ``vector``. A popularity blend adds the most popular objects to the nearest ones this way:
    an item a little farther than the nearest ``limit × RERANK_POOL_FACTOR`` may still win once
    its popularity counts."""
    if not pks:
        return []
    using = using or router.db_for_read(Embedding)
    columns = f"e.object_pk, {spec.distance_sql('e')} AS distance, e.created_at"
    if with_vectors:
        columns += ", e.vector"
    sql = (
        f"SELECT {columns} FROM {Embedding._meta.db_table} e "
        f"WHERE {spec.predicate_sql('e')} AND e.object_pk = ANY(%s)"
    )
    conn = connections[using]
    with conn.cursor() as cursor:
        if with_vectors:
            from embrec.storage import _register_vector

            _register_vector(conn)
        cursor.execute(sql, [vector_literal(vector), list(pks)])
        fetched = cursor.fetchall()
    return [
        Candidate(
            pk=row[0],
            distance=float(row[1]),
            created_at=row[2],
            vector=parse_vector(row[3]) if with_vectors else None,
        )
        for row in fetched
    ]


def mmr(candidates: Sequence[Candidate], limit: int, lambda_: float) -> list[Candidate]:
    """Maximal marginal relevance: greedily pick ``argmax λ·score − (1−λ)·max sim(selected)``.

    ``λ = 1`` keeps the relevance order; lower values favour items unlike those already picked.
    Candidates need ``vector`` set.
    """
    if not candidates:
        return []
    vectors = np.stack([c.vector for c in candidates]).astype(np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    vectors /= norms
    relevance = np.array([c.score for c in candidates])
    chosen: list[int] = []
    max_sim = np.full(len(candidates), -np.inf)
    remaining = np.ones(len(candidates), dtype=bool)
    for _ in range(min(limit, len(candidates))):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        value = lambda_ * relevance - (1.0 - lambda_) * penalty
        value[~remaining] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        remaining[best] = False
        max_sim = np.maximum(max_sim, vectors @ vectors[best])
    return [candidates[i] for i in chosen]


def _rank(
    rec: Recommendable,
    spec: IndexSpec,
    vector: np.ndarray,
    limit: int,
    *,
    visible: models.QuerySet,
    exclusions: Exclusions,
    mmr_lambda: float | None,
    popularity: float,
    recency: float,
    ef_search: int | None,
) -> list[Candidate]:
    if not np.isfinite(vector).all() or not np.any(vector):
        raise QueryError("The query has nothing to compare with (an all-zero vector).")
    rerank = mmr_lambda is not None or popularity or recency
    pool = limit * max(int(embrec_settings.RERANK_POOL_FACTOR), 1) if rerank else limit
    candidates = nearest(
        spec,
        vector,
        pool,
        exclusions=exclusions,
        visible=visible,
        ef_search=ef_search,
        with_vectors=mmr_lambda is not None,
    )
    ranking = None
    if popularity:
        # The most popular visible items join the nearest (visibility, filters and exclusions
        # hold for them too), and the blend normalises by the visible maximum.
        ranking = popularity_ranking(
            spec.content_type_id,
            visible,
            exclusions,
            int(embrec_settings.RERANK_POPULAR_CANDIDATES or 0),
            skip=[c.pk for c in candidates],
        )
        candidates += candidates_for(
            spec, vector, [pk for pk, _ in ranking.top], with_vectors=mmr_lambda is not None
        )
    _blend(candidates, spec.content_type_id, popularity, recency, ranking)
    if mmr_lambda is not None:
        return mmr(candidates, limit, mmr_lambda)
    candidates.sort(key=lambda c: (-c.score, c.distance, c.pk))
    return candidates[:limit]


def hydrate(
    rec: Recommendable,
    candidates: Sequence[Candidate],
    source: str,
    visible: models.QuerySet | None = None,
) -> list[Result]:
    """Load host objects for ``candidates`` in one query, in rank order, dropping invisible ones."""
    qs = visible if visible is not None else rec.get_queryset()
    objects = _in_bulk(rec, qs, [c.pk for c in candidates])
    return [
        Result(object=objects[c.pk], score=c.score, source=source, similarity=c.similarity)
        for c in candidates
        if c.pk in objects
    ]


def _in_bulk(rec: Recommendable, qs: models.QuerySet, pks: Sequence[str]) -> dict[str, Any]:
    values = []
    for pk in pks:
        try:
            values.append(rec.pk_from_string(pk))
        except (ValidationError, ValueError, TypeError):
            continue
    if not values:
        return {}
    return {str(obj.pk): obj for obj in rec.get_results_queryset(qs.filter(pk__in=values))}


def _exclusions(rec, user_id, *, pks=(), seen: bool = False) -> Exclusions:
    ct = ContentType.objects.get_for_model(rec.model, for_concrete_model=False)
    return Exclusions(pks=[str(p) for p in pks], user_id=user_id, content_type_id=ct.id, seen=seen)


def _fill(
    rec: Recommendable,
    results: list[Result],
    limit: int,
    *,
    visible: models.QuerySet,
    exclusions: Exclusions,
    encoder: str,
) -> list[Result]:
    """Top up a short list with popular, then recent, items (each labelled as such)."""
    if len(results) >= limit:
        return results
    taken = Exclusions(
        pks=[*exclusions.pks, *(r.pk for r in results)],
        user_id=exclusions.user_id,
        content_type_id=exclusions.content_type_id,
        seen=exclusions.seen,
    )
    extra = _popular_results(rec, limit - len(results), visible, taken, encoder)
    return results + extra


def _popular_results(
    rec: Recommendable,
    limit: int,
    visible: models.QuerySet,
    exclusions: Exclusions,
    encoder: str,
) -> list[Result]:
    ct = ContentType.objects.get_for_model(rec.model, for_concrete_model=False)
    visible_pks = _visible_pks(visible)
    ranking = popularity_ranking(ct.id, visible, exclusions, limit)
    candidates = [
        Candidate(pk=pk, distance=1.0, score=float(normalized_popularity(p, ranking.maximum)))
        for pk, p in ranking.top
    ]
    results = hydrate(rec, candidates, SOURCE_POPULAR, visible)
    for r in results:
        r.similarity = None
    if len(results) < limit:
        # Nothing (or too little) is popular yet: newest embedded items.
        taken = [*exclusions.pks, *(r.pk for r in results)]
        rows = Embedding.objects.filter(content_type=ct, encoder=encoder, object_pk__in=visible_pks)
        identity = read_version(encoder).identity
        if identity is not None:
            rows = rows.filter(identity=identity)
        recent = list(
            rows.exclude(object_pk__in=taken)
            .exclude(exclusions.q())
            .order_by("-created_at", "-id")
            .values_list("object_pk", flat=True)[: limit - len(results)]
        )
        extra = hydrate(
            rec, [Candidate(pk=pk, distance=1.0) for pk in recent], SOURCE_RECENT, visible
        )
        for r in extra:
            r.similarity = None
            r.score = 0.0
        results += extra
    return results


# --------------------------------------------------------------------------- public API


def similar(
    obj: models.Model,
    *,
    limit: int | None = None,
    encoder: str | None = None,
    request=None,
    user=None,
    filters: Mapping[str, Any] | None = None,
    exclude_seen: bool = False,
    mmr_lambda: float | None = None,
    popularity: float = 0.0,
    recency: float = 0.0,
    ef_search: int | None = None,
) -> list[Result]:
    """Objects most similar to ``obj`` (itself excluded), visible to ``request``.

    ``user`` (default: ``request.user``) never sees items they disliked, nor items they
    interacted with at all when ``exclude_seen``. ``filters`` are validated against
    ``filter_fields``; ``mmr_lambda`` (0–1) diversifies; ``popularity`` and ``recency`` (0–1,
    shares of the score) blend those in. Raises :class:`embrec.NotRegistered`,
    :class:`NotEmbedded` (no vector yet) and :class:`QueryError` (bad input).
    """
    rec = registry.get(obj)
    limit = clean_limit(limit)
    mmr_lambda, popularity, recency = clean_ranking(mmr_lambda, popularity, recency)
    if encoder is None and rec.similar_encoder in rec.get_encoders():
        encoder = rec.similar_encoder  # the registration's choice for similar items
    encoder = _encoder_for(rec, encoder)
    visible = _visible(rec, request, filters)
    vector, spec = get_vector(obj, encoder)
    user_id = _user_id(user if user is not None else _request_user(request))
    exclusions = _exclusions(rec, user_id, pks=[obj.pk], seen=exclude_seen)
    candidates = _rank(
        rec,
        spec,
        vector,
        limit,
        visible=visible,
        exclusions=exclusions,
        mmr_lambda=mmr_lambda,
        popularity=popularity,
        recency=recency,
        ef_search=ef_search,
    )
    return hydrate(rec, candidates, SOURCE_SIMILAR, visible)


def search(
    text: str,
    *,
    model: Any = None,
    limit: int | None = None,
    encoder: str | None = None,
    request=None,
    user=None,
    filters: Mapping[str, Any] | None = None,
    exclude_seen: bool = False,
    mmr_lambda: float | None = None,
    popularity: float = 0.0,
    recency: float = 0.0,
    ef_search: int | None = None,
) -> list[Result]:
    """Objects of ``model`` whose vectors are nearest to the encoded ``text``.

    The text is encoded in this process with the registration's first encoder that works from
    text (for a sentence-transformers encoder, the model loads on the first search). Other
    arguments as in :func:`similar`.
    """
    rec = get_registration(model)
    text = clean_text(text)
    limit = clean_limit(limit)
    mmr_lambda, popularity, recency = clean_ranking(mmr_lambda, popularity, recency)
    encoder = _text_encoder_for(rec, encoder)
    visible = _visible(rec, request, filters)
    version = read_version(encoder)
    vector = version.encoder().encode([text])[0]
    if not np.any(vector):
        raise QueryError(
            "The search text has no words the encoder knows.", code="empty_query", field="q"
        )
    spec = index_spec(rec, encoder, vector.shape[0], version)
    user_id = _user_id(user if user is not None else _request_user(request))
    exclusions = _exclusions(rec, user_id, seen=exclude_seen)
    candidates = _rank(
        rec,
        spec,
        vector,
        limit,
        visible=visible,
        exclusions=exclusions,
        mmr_lambda=mmr_lambda,
        popularity=popularity,
        recency=recency,
        ef_search=ef_search,
    )
    return hydrate(rec, candidates, SOURCE_SEARCH, visible)


def popular(
    model: Any = None,
    *,
    limit: int | None = None,
    request=None,
    user=None,
    filters: Mapping[str, Any] | None = None,
    exclude_seen: bool = False,
    encoder: str | None = None,
) -> list[Result]:
    """The most popular visible objects (most distinct users with a positive interaction within
    ``POPULARITY_WINDOW_DAYS``), topped up with the newest embedded objects (``"recent"``)."""
    rec = get_registration(model)
    limit = clean_limit(limit)
    encoder = _encoder_for(rec, encoder)
    visible = _visible(rec, request, filters)
    user_id = _user_id(user if user is not None else _request_user(request))
    return _popular_results(
        rec, limit, visible, _exclusions(rec, user_id, seen=exclude_seen), encoder
    )


def recommend(
    user,
    *,
    model: Any = None,
    limit: int | None = None,
    encoder: str | None = None,
    request=None,
    filters: Mapping[str, Any] | None = None,
    exclude_seen: bool = True,
    mmr_lambda: float | None = None,
    popularity: float | None = None,
    recency: float = 0.0,
    explain: bool = True,
    ef_search: int | None = None,
) -> list[Result]:
    """Personal recommendations for ``user`` among the visible objects of ``model``.

    Ranked by the user's vector (weighted, time-decayed mean of the vectors of interacted items;
    negative kinds subtract), excluding disliked items and, with ``exclude_seen`` (default),
    everything the user already interacted with. Each ``"personal"`` result carries an
    ``explanation``: the interacted items that contributed most. Anonymous users and users
    without a usable vector get :func:`popular` results; a short list is topped up with them.
    ``popularity`` defaults to ``EMBREC["RECOMMEND_POPULARITY"]``.
    """
    from embrec.interactions import user_vector

    rec = get_registration(model)
    limit = clean_limit(limit)
    if popularity is None:
        popularity = embrec_settings.RECOMMEND_POPULARITY
    mmr_lambda, popularity, recency = clean_ranking(mmr_lambda, popularity, recency)
    encoder = _encoder_for(rec, encoder)
    visible = _visible(rec, request, filters)
    user_id = _user_id(user)
    exclusions = _exclusions(rec, user_id, seen=exclude_seen)
    if user_id is None:
        return _popular_results(rec, limit, visible, exclusions, encoder)
    version = read_version(encoder)
    vector = user_vector(user_id, rec, encoder, identity=version.identity)
    if vector is None:
        return _popular_results(rec, limit, visible, exclusions, encoder)
    spec = index_spec(rec, encoder, vector.shape[0], version)
    candidates = _rank(
        rec,
        spec,
        vector,
        limit,
        visible=visible,
        exclusions=exclusions,
        mmr_lambda=mmr_lambda,
        popularity=popularity,
        recency=recency,
        ef_search=ef_search,
    )
    results = hydrate(rec, candidates, SOURCE_PERSONAL, visible)
    if explain:
        # Explanations may name items outside the filters, never items the request cannot see.
        explain_results(
            rec,
            results,
            user_id,
            encoder,
            rec.get_visible_queryset(request),
            identity=version.identity,
        )
    return _fill(rec, results, limit, visible=visible, exclusions=exclusions, encoder=encoder)


def explain_results(
    rec: Recommendable,
    results: list[Result],
    user_id: Any,
    encoder: str,
    visible: models.QuerySet,
    *,
    identity: str | None = None,
) -> None:
    """Attach to each result the interacted items with the largest ``weight × cosine`` to it.

    The similarities are computed by PostgreSQL in one statement (results × positively weighted
    interacted items, top few per result); no item vector is loaded into Python. Only items in
    ``visible`` are named. Vectors of one encoder identity are compared (``identity``, by
    default the live version's).
    """
    from embrec.interactions import interaction_weights

    if not results:
        return
    ct = ContentType.objects.get_for_model(rec.model, for_concrete_model=False)
    weights, kinds, _ = interaction_weights(user_id, ct.id)
    positive = {pk: w for pk, w in weights.items() if w > 0}
    for r in results:
        r.explanation = []
    if not positive:
        return
    if identity is None:
        identity = read_version(encoder).identity
    table = Embedding._meta.db_table
    sql = f"""
        SELECT pk, item_pk, contribution FROM (
            SELECT r.object_pk AS pk, i.object_pk AS item_pk,
                   w.weight * (1 - (r.vector <=> i.vector)) AS contribution,
                   row_number() OVER (
                       PARTITION BY r.object_pk
                       ORDER BY w.weight * (1 - (r.vector <=> i.vector)) DESC, i.object_pk
                   ) AS rank
              FROM {table} r
              JOIN {table} i
                ON i.content_type_id = r.content_type_id AND i.encoder = r.encoder
               AND i.dimensions = r.dimensions AND i.identity = r.identity
              JOIN unnest(%s::text[], %s::float8[]) AS w(pk, weight) ON w.pk = i.object_pk
             WHERE r.content_type_id = %s AND r.encoder = %s AND r.object_pk = ANY(%s)
               AND (%s::text IS NULL OR r.identity = %s::text)
        ) ranked
        WHERE rank <= %s AND contribution > 0
        ORDER BY pk, contribution DESC
    """
    params = [
        list(positive),
        list(positive.values()),
        ct.id,
        encoder,
        [r.pk for r in results],
        identity,
        identity,
        # A few spare rows per result for items the request may not see.
        EXPLANATION_SIZE * 3,
    ]
    using = router.db_for_read(Embedding)
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    objects = _in_bulk(rec, visible, sorted({item for _, item, _ in rows}))
    by_result: dict[str, list[Explanation]] = {}
    for pk, item, contribution in rows:
        if item not in objects:
            continue
        items = by_result.setdefault(pk, [])
        if len(items) < EXPLANATION_SIZE:
            items.append(
                Explanation(
                    object=objects[item],
                    pk=item,
                    kind=kinds.get(item, ""),
                    weight=round(positive[item], 6),
                    contribution=round(float(contribution), 6),
                )
            )
    for r in results:
        r.explanation = by_result.get(r.pk, [])
