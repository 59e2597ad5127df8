"""Retrieval SQL: nearest neighbours over the HNSW index of one (model, encoder).

Every vector query runs one ordered ANN search over the partial HNSW index of its
:class:`~embrec.storage.IndexSpec`, restricted in the same statement to the scope's visible
objects (:func:`embrec.read.scope.visible_sql`) and exclusions. pgvector's iterative index scans
(``hnsw.iterative_scan``, pgvector >= 0.8) keep scanning until ``limit`` rows pass those
conditions; the scan settings are ``SET LOCAL`` in the query's transaction.

Also here: the stored vector of an object (:func:`get_vector`), the distance of given objects
to a vector (:func:`candidates_for`), and the plan of a query (:func:`explain`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, models, router, transaction

from embrec.conf import embrec_settings
from embrec.encoders import get_encoder
from embrec.exceptions import NotEmbedded
from embrec.items import Recommendable
from embrec.models import Embedding, OutboxEntry
from embrec.read.scope import Exclusions, visible_sql
from embrec.registry import registry
from embrec.storage import IndexSpec, _register_vector, parse_vector, vector_literal


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


def _scan_settings(cursor: Any, limit: int, ef_search: int | None) -> None:
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


def _columns(spec: IndexSpec, with_vectors: bool) -> str:
    columns = f"e.object_pk, {spec.distance_sql('e')} AS distance, e.created_at"
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
    restriction = visible_sql(visible, "e")
    if restriction is not None:
        where.append(restriction[0])
        params.extend(restriction[1])
    sql = (
        f"SELECT {_columns(spec, with_vectors)} FROM {Embedding._meta.db_table} e "
        f"WHERE {' AND '.join(where)} ORDER BY distance LIMIT %s"
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
            _register_vector(conn)
        _scan_settings(cursor, limit, ef_search)
        cursor.execute(sql, params)
        candidates = _candidates(cursor.fetchall(), with_vectors)
    # relaxed_order may return rows slightly out of order; restore it.
    candidates.sort(key=lambda c: (c.distance, c.pk))
    return candidates


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
    sql = (
        f"SELECT {_columns(spec, with_vectors)} FROM {Embedding._meta.db_table} e "
        f"WHERE {spec.predicate_sql('e')} AND e.object_pk = ANY(%s)"
    )
    conn = connections[using]
    with conn.cursor() as cursor:
        if with_vectors:
            _register_vector(conn)
        cursor.execute(sql, [vector_literal(vector), list(pks)])
        return _candidates(cursor.fetchall(), with_vectors)


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


def index_spec(rec: Recommendable, encoder: str, dimensions: int) -> IndexSpec:
    """The :class:`IndexSpec` of a registration's vectors (no model is loaded)."""
    ct = ContentType.objects.get_for_model(rec.model, for_concrete_model=False)
    halfvec = bool(get_encoder(encoder).options.get("halfvec"))
    return IndexSpec(ct.id, encoder, int(dimensions), halfvec)


def get_vector(obj: models.Model, encoder: str) -> tuple[np.ndarray, IndexSpec]:
    """The stored vector of ``obj`` and its index; :class:`NotEmbedded` when there is none."""
    rec = registry.get(obj)
    ct = ContentType.objects.get_for_model(obj, for_concrete_model=False)
    row = (
        Embedding.objects.filter(content_type=ct, object_pk=str(obj.pk), encoder=encoder)
        .values_list("vector", "dimensions")
        .first()
    )
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
    return parse_vector(row[0]), index_spec(rec, encoder, int(row[1]))
