"""Retrieval SQL: nearest neighbours over the HNSW index of one (model, encoder, version).

Every vector query runs one ordered ANN search over the partial HNSW index of its
:class:`~embrec.storage.IndexSpec`, restricted in the same statement to the scope's visible
objects (:func:`embrec.read.scope.visible_sql`) and exclusions. pgvector's iterative index scans
(``hnsw.iterative_scan``, pgvector >= 0.8) keep scanning until ``limit`` rows pass those
conditions.

One round trip per search: the scan settings travel in the same message as the query
(``SET LOCAL …; SELECT …``, which PostgreSQL runs as one implicit transaction, so the settings
last for that statement only: no transaction of our own, nothing left on the connection). A
stored vector (an object's, for similar items; a user's, for recommendations) never leaves the
database: it is selected inside the ANN statement (:class:`StoredVector`), and when that selects
nothing the caller falls back to loading it (to say why: not embedded, hidden, stale).

Also here: the stored vector of an object (:func:`get_vector`), the distance of given objects
to a vector (:func:`candidates_for`), and the plan of a query (:func:`explain`). Vectors are
read from the live version of the encoder (:func:`embrec.versions.read_version`, looked up once
per query), so a query never compares vectors of two models during a switch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, models, router, transaction

from embrec.conf import embrec_settings
from embrec.exceptions import NotEmbedded
from embrec.items import Recommendable
from embrec.models import Embedding, OutboxEntry, UserEmbedding, content_type_of
from embrec.read.scope import Exclusions, visible_sql
from embrec.registry import registry
from embrec.storage import (
    IndexSpec,
    _register_vector,
    ann_sql,
    parse_vector,
    scan_size,
    vector_literal,
)
from embrec.versions import ReadVersion, read_version


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


@dataclass(frozen=True)
class StoredVector:
    """A query vector that stays in PostgreSQL: ``sql`` selects it (at most one row, one column
    ``v`` of the index's vector type) inside the ANN statement.

    When it selects no row (nothing stored, the object hidden, a stale user vector, other
    dimensions, an all-zero vector) the search returns nothing and the caller takes the slow
    path, which loads the vector and says why.
    """

    sql: str
    params: tuple = ()


#: A query vector: bound from Python, or selected in the statement.
QueryVector = np.ndarray | StoredVector


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


def scan_settings(limit: int, ef_search: int | None) -> list[str]:
    """The ``SET LOCAL`` statements of one search: ``hnsw.ef_search`` (at least ``limit``, at
    most 1000), ``hnsw.iterative_scan`` and ``hnsw.max_scan_tuples``."""
    ef = max(int(ef_search or embrec_settings.EF_SEARCH), int(limit))
    mode = str(embrec_settings.ITERATIVE_SCAN)
    if mode not in {"off", "strict_order", "relaxed_order"}:
        raise ImproperlyConfigured(
            "EMBREC['ITERATIVE_SCAN'] must be 'off', 'strict_order' or 'relaxed_order'."
        )
    statements = [f"SET LOCAL hnsw.ef_search = {min(ef, 1000)}"]
    statements.append(f"SET LOCAL hnsw.iterative_scan = {mode}")
    max_tuples = embrec_settings.MAX_SCAN_TUPLES
    if max_tuples:
        statements.append(f"SET LOCAL hnsw.max_scan_tuples = {int(max_tuples)}")
    return statements


def _fetch_with_settings(
    using: str, settings: list[str], sql: str, params: Sequence[Any], with_vectors: bool = False
) -> list[tuple]:
    """Rows of ``sql`` run with ``settings`` (``SET LOCAL`` statements) in force.

    With Django's default client-side binding cursor the settings and the query go in one
    message: PostgreSQL runs a multi-statement message as one implicit transaction, so the
    settings hold for this query only and cost no round trip. With server-side binding
    (``OPTIONS["server_side_binding"]``), which takes one statement per message, they run in a
    transaction of their own, as ``SET LOCAL`` needs.
    """
    conn = connections[using]
    if with_vectors:
        conn.ensure_connection()
        _register_vector(conn)
    with conn.cursor() as cursor:
        if isinstance(cursor.cursor, psycopg.ClientCursor):
            cursor.execute("; ".join([*settings, sql]), params)
            for _ in settings:
                cursor.cursor.nextset()
            return cursor.fetchall()
    with transaction.atomic(using=using), conn.cursor() as cursor:
        for statement in settings:
            cursor.execute(statement)
        cursor.execute(sql, params)
        return cursor.fetchall()


def _query_vector_sql(spec: IndexSpec, vector: QueryVector) -> tuple[list[str], str, list, str]:
    """``(common table expressions, distance expression, their parameters, condition)`` of a
    query vector; a stored vector is the CTE ``src``."""
    if isinstance(vector, StoredVector):
        return (
            [f"src AS MATERIALIZED ({vector.sql})"],
            f"(e.vector::{spec.vector_type}) <=> (SELECT src.v FROM src)",
            list(vector.params),
            "EXISTS (SELECT 1 FROM src)",
        )
    return [], spec.distance_sql("e"), [vector_literal(vector)], ""


def _with(ctes: Sequence[str]) -> str:
    return f"WITH {', '.join(ctes)} " if ctes else ""


def _columns(distance: str, with_vectors: bool) -> str:
    columns = f"e.object_pk, {distance} AS distance, e.created_at"
    return columns + ", e.vector" if with_vectors else columns


def _candidates(rows: Sequence[Sequence[Any]], with_vectors: bool) -> list[Candidate]:
    return [
        Candidate(
            pk=row[0],
            distance=float(row[1]),
            created_at=row[2],
            vector=parse_vector(row[3]) if with_vectors else None,
        )
        for row in rows
    ]


def nearest_sql(
    spec: IndexSpec,
    vector: QueryVector,
    limit: int,
    *,
    exclusions: Exclusions | None = None,
    visible: models.QuerySet | None = None,
    with_vectors: bool = False,
) -> tuple[str, list]:
    """The SQL and parameters of one ANN query (see :func:`nearest`)."""
    ctes, sql, params = _nearest_parts(spec, vector, limit, exclusions, visible, with_vectors)
    return _with(ctes) + sql, params


def _where(
    spec: IndexSpec, exclusions: Exclusions | None, visible: models.QuerySet | None
) -> tuple[str, list]:
    where = [spec.predicate_sql("e")]
    params: list[Any] = []
    for sql, sql_params in (exclusions or Exclusions()).sql("e"):
        where.append(sql)
        params.extend(sql_params)
    restriction = visible_sql(visible, "e")
    if restriction is not None:
        where.append(restriction[0])
        params.extend(restriction[1])
    return " AND ".join(where), params


def _nearest_parts(
    spec: IndexSpec,
    vector: QueryVector,
    limit: int,
    exclusions: Exclusions | None,
    visible: models.QuerySet | None,
    with_vectors: bool,
) -> tuple[list[str], str, list]:
    """``(CTEs, SELECT, parameters of both in order)`` of an ANN query."""
    if spec.reranked:
        # A bit or leading-dimensions index: the index search returns spec.rerank rows,
        # re-ranked by the full vectors (storage.ann_sql), to a bound vector.
        if isinstance(vector, StoredVector):
            raise ValueError("A re-ranked index searches with a bound query vector.")
        where_sql, where_params = _where(spec, exclusions, visible)
        columns = _columns("{distance}", with_vectors)
        sql, params = ann_sql(spec, columns, where_sql, where_params, vector, limit, alias="e")
        return [], sql, params
    ctes, distance, params, condition = _query_vector_sql(spec, vector)
    where_sql, where_params = _where(spec, exclusions, visible)
    if condition:
        where_sql += f" AND {condition}"
    sql = (
        f"SELECT {_columns(distance, with_vectors)} FROM {Embedding._meta.db_table} e "
        f"WHERE {where_sql} ORDER BY distance LIMIT %s"
    )
    return ctes, sql, [*params, *where_params, int(limit)]


def nearest(
    spec: IndexSpec,
    vector: QueryVector,
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
    One round trip (see the module docstring); a :class:`StoredVector` that selects nothing
    gives no rows.
    """
    using = using or router.db_for_read(Embedding)
    _check_pgvector(using)
    sql, params = nearest_sql(
        spec, vector, limit, exclusions=exclusions, visible=visible, with_vectors=with_vectors
    )
    rows = _fetch_with_settings(
        using,
        scan_settings(scan_size(spec, limit), ef_search),
        sql,
        params,
        with_vectors=with_vectors,
    )
    candidates = _candidates(rows, with_vectors)
    # relaxed_order may return rows slightly out of order; restore it.
    candidates.sort(key=lambda c: (c.distance, c.pk))
    return candidates


def nearest_and_popular(
    spec: IndexSpec,
    vector: QueryVector,
    limit: int,
    ranking: Callable[[str], tuple[str, list]],
    *,
    exclusions: Exclusions | None = None,
    visible: models.QuerySet | None = None,
    ef_search: int | None = None,
    with_vectors: bool = False,
    using: str | None = None,
) -> tuple[list[Candidate], list[tuple], list[Candidate]]:
    """:func:`nearest`, a popularity ranking and the popular objects' distances in one statement.

    ``ranking(skip)`` returns the ranking's SQL and parameters: ``(part, object_pk, users)``
    rows (part 1: the popular objects that join the candidates), leaving out the keys of the SQL
    ``skip``:
    the nearest rows of this same statement. Returns the nearest candidates (as
    :func:`nearest`), the ranking's rows, and a candidate for each popular object with a vector
    (as :func:`candidates_for`).
    """
    using = using or router.db_for_read(Embedding)
    _check_pgvector(using)
    ctes, near_sql, params = _nearest_parts(spec, vector, limit, exclusions, visible, with_vectors)
    ranking_sql, ranking_params = ranking("SELECT near.object_pk FROM near")
    _, distance, distance_params, condition = _query_vector_sql(spec, vector)
    if isinstance(vector, StoredVector):
        distance_params = []  # the stored vector's parameters belong to its CTE
    vector_column = ", {}.vector" if with_vectors else ""
    sql = (
        _with(
            [
                *ctes,
                f"near AS MATERIALIZED ({near_sql})",
                f"ranking (part, object_pk, users) AS ({ranking_sql})",
            ]
        )
        + "SELECT NULL::integer AS part, near.object_pk, near.distance, near.created_at, "
        + f"NULL::float8 AS users{vector_column.format('near')} FROM near "
        + "UNION ALL SELECT ranking.part, ranking.object_pk, p.distance, p.created_at, "
        + f"ranking.users{vector_column.format('p')} FROM ranking LEFT JOIN LATERAL ("
        + f"SELECT {_columns(distance, with_vectors)} FROM {Embedding._meta.db_table} e "
        + f"WHERE ranking.part = 1 AND {spec.predicate_sql('e')} "
        + "AND e.object_pk = ranking.object_pk"
        + (f" AND {condition}" if condition else "")
        + ") p ON TRUE"
    )
    rows = _fetch_with_settings(
        using,
        scan_settings(scan_size(spec, limit), ef_search),
        sql,
        [*params, *ranking_params, *distance_params],
        with_vectors=with_vectors,
    )
    near, popular, ranked = [], [], []
    for part, pk, dist, created_at, users, *vector_value in rows:
        row = (pk, dist, created_at, *vector_value)
        if part is None:
            near.append(row)
            continue
        ranked.append((part, pk, users))
        if part == 1 and dist is not None:
            popular.append(row)
    candidates = _candidates(near, with_vectors)
    candidates.sort(key=lambda c: (c.distance, c.pk))
    return candidates, ranked, _candidates(popular, with_vectors)


def candidates_for(
    spec: IndexSpec,
    vector: QueryVector,
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
    ctes, distance, params, condition = _query_vector_sql(spec, vector)
    sql = (
        f"{_with(ctes)}SELECT {_columns(distance, with_vectors)} "
        f"FROM {Embedding._meta.db_table} e "
        f"WHERE {spec.predicate_sql('e')} AND e.object_pk = ANY(%s)"
        + (f" AND {condition}" if condition else "")
    )
    conn = connections[using]
    with conn.cursor() as cursor:
        if with_vectors:
            _register_vector(conn)
        cursor.execute(sql, [*params, list(pks)])
        return _candidates(cursor.fetchall(), with_vectors)


def explain(
    spec: IndexSpec,
    vector: QueryVector,
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
    rows = _fetch_with_settings(
        using, scan_settings(scan_size(spec, limit), ef_search), prefix + sql, params
    )
    return "\n".join(row[0] for row in rows)


#: The dimensions last seen per (content type, encoder): what :func:`known_spec` assumes.
_dimensions: dict[tuple[int, str], int] = {}


def index_spec(
    rec: Recommendable, encoder: str, dimensions: int, version: ReadVersion | None = None
) -> IndexSpec:
    """The :class:`IndexSpec` of a registration's vectors of the live version of ``encoder``
    (or of ``version``, looked up once by the caller); no model is loaded."""
    ct = content_type_of(rec.model)
    _dimensions[(ct.id, encoder)] = int(dimensions)
    return (version or read_version(encoder)).spec(ct.id, dimensions)


def known_spec(rec: Recommendable, encoder: str, version: ReadVersion) -> IndexSpec | None:
    """The :class:`IndexSpec` of ``version`` at the dimensions this process last saw for
    ``rec`` and ``encoder`` (``None`` before the first query, and for a re-ranked index, which
    re-ranks with a bound vector). A :class:`StoredVector` of other dimensions selects nothing,
    so a wrong guess costs the slow path, never a wrong result."""
    ct = content_type_of(rec.model)
    dimensions = _dimensions.get((ct.id, encoder))
    if dimensions is None:
        return None
    spec = version.spec(ct.id, dimensions)
    return None if spec.reranked else spec


def stored_object_vector(
    spec: IndexSpec, pk: Any, shown: models.QuerySet | None = None
) -> StoredVector:
    """The stored vector of object ``pk`` under ``spec``, selected in the ANN statement.

    With ``shown``, only if that queryset holds the object (the request may see it). Selects
    nothing for an all-zero vector (nothing to compare with).
    """
    table = Embedding._meta.db_table
    where = [spec.predicate_sql("s"), "s.object_pk = %s", "vector_norm(s.vector) > 0"]
    params: list[Any] = [str(pk)]
    restriction = visible_sql(shown, "s")
    if restriction is not None:
        where.append(restriction[0])
        params.extend(restriction[1])
    sql = f"SELECT s.vector::{spec.vector_type} AS v FROM {table} s WHERE {' AND '.join(where)}"
    # Before versions are registered an object may keep rows of several identities: one is used.
    return StoredVector(sql + " LIMIT 1", tuple(params))


def stored_user_vector(spec: IndexSpec, user_id: Any) -> StoredVector:
    """A user's stored vector under ``spec``, selected in the ANN statement; nothing when it is
    stale (recomputed on the slow path), of other dimensions or all zero."""
    table = UserEmbedding._meta.db_table
    sql = (
        f"SELECT u.vector::{spec.vector_type} AS v FROM {table} u "
        f"WHERE u.user_id = %s AND u.content_type_id = {int(spec.content_type_id)} "
        f"AND u.encoder = %s AND u.dimensions = {int(spec.dimensions)} AND NOT u.is_stale "
        f"AND vector_norm(u.vector) > 0"
    )
    params: tuple = (user_id, spec.encoder)
    if spec.identity is not None:
        sql += " AND u.identity = %s"
        params += (spec.identity,)
    # Before versions are registered a user may keep rows of several identities: one is used.
    return StoredVector(sql + " LIMIT 1", params)


def get_vector(
    obj: models.Model, encoder: str, version: ReadVersion | None = None
) -> tuple[np.ndarray, IndexSpec]:
    """The stored vector of ``obj`` under the live version of ``encoder`` (or ``version``,
    looked up once by the caller) and that version's index; :class:`NotEmbedded` when there is
    none."""
    rec = registry.get(obj)
    ct = content_type_of(obj)
    version = version or read_version(encoder)
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
