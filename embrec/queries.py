"""The read path: similar items (and, built on the same search, personal and text queries).

Every query runs one ordered ANN search over the HNSW index of its (model, encoder), restricted to
what the caller may see, then hydrates the host objects in one query, keeping the order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from django.contrib.contenttypes.models import ContentType
from django.db import connection, models, transaction

from embrec.conf import embrec_settings
from embrec.models import Embedding
from embrec.registry import registry
from embrec.storage import IndexSpec, parse_vector, vector_literal


class NotEmbedded(LookupError):
    """The object has no vector yet (pending, failed, or not indexable)."""


@dataclass
class Result:
    """One recommended object with its score (cosine similarity) and where it came from."""

    object: Any
    score: float
    source: str
    explanation: list | None = None


def _clean_limit(limit: int | None) -> int:
    if limit is None:
        return int(embrec_settings.DEFAULT_LIMIT)
    limit = int(limit)
    if limit <= 0 or limit > int(embrec_settings.MAX_LIMIT):
        raise ValueError(f"limit must be between 1 and {embrec_settings.MAX_LIMIT}")
    return limit


def _default_encoder(rec) -> str:
    return rec.get_encoders()[0]


def nearest(
    spec: IndexSpec,
    vector: np.ndarray,
    limit: int,
    *,
    exclude_pks: list[str] | None = None,
    visible: models.QuerySet | None = None,
    ef_search: int | None = None,
) -> list[tuple[str, float]]:
    """``(object_pk, distance)`` of the ``limit`` nearest vectors, via the HNSW index.

    ``visible`` (a queryset of the host model) restricts results; iterative index scans keep
    the result full when the restriction or exclusions remove candidates.
    """
    where = [spec.predicate_sql("e")]
    params: list[Any] = [vector_literal(vector)]
    if exclude_pks:
        where.append("NOT (e.object_pk = ANY(%s))")
        params.append(list(exclude_pks))
    if visible is not None and visible.query.where:
        sub_sql, sub_params = (
            visible.annotate(_embrec_pk=models.functions.Cast("pk", models.CharField()))
            .values("_embrec_pk")
            .query.sql_with_params()
        )
        where.append(f"e.object_pk IN ({sub_sql})")
        params.extend(sub_params)
    sql = (
        f"SELECT e.object_pk, {spec.distance_sql('e')} AS distance FROM embrec_embedding e "
        f"WHERE {' AND '.join(where)} ORDER BY distance LIMIT %s"
    )
    params.append(limit)
    ef = int(ef_search or embrec_settings.EF_SEARCH)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL hnsw.ef_search = {max(ef, limit)}")
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # relaxed_order may return rows slightly out of order; restore it.
    return sorted(((pk, float(d)) for pk, d in rows), key=lambda row: row[1])


def hydrate(rec, rows: list[tuple[str, float]], source: str, visible=None) -> list[Result]:
    """Load host objects for ``rows`` in one query, in rank order, dropping invisible ones."""
    qs = visible if visible is not None else rec.get_queryset()
    objects = qs.in_bulk([rec.pk_from_string(pk) for pk, _ in rows])
    by_str = {str(pk): obj for pk, obj in objects.items()}
    return [
        Result(object=by_str[pk], score=1.0 - distance, source=source)
        for pk, distance in rows
        if pk in by_str
    ]


def get_vector(obj: models.Model, encoder: str) -> tuple[np.ndarray, IndexSpec]:
    ct = ContentType.objects.get_for_model(obj, for_concrete_model=False)
    row = (
        Embedding.objects.filter(content_type=ct, object_pk=str(obj.pk), encoder=encoder)
        .values_list("vector", "dimensions")
        .first()
    )
    if row is None:
        raise NotEmbedded(f"{obj._meta.label_lower} {obj.pk} has no {encoder!r} embedding yet.")
    from embrec.encoders import get_encoder

    halfvec = bool(get_encoder(encoder).options.get("halfvec"))
    return parse_vector(row[0]), IndexSpec(ct.id, encoder, int(row[1]), halfvec)


def similar(
    obj: models.Model,
    *,
    limit: int | None = None,
    encoder: str | None = None,
    request=None,
) -> list[Result]:
    """Objects most similar to ``obj`` (itself excluded), visible to ``request``.

    Raises :class:`embrec.NotRegistered` for an unregistered model and :class:`NotEmbedded` when
    ``obj`` has no vector yet.
    """
    rec = registry.get(obj)
    limit = _clean_limit(limit)
    encoder = encoder or _default_encoder(rec)
    vector, spec = get_vector(obj, encoder)
    visible = rec.get_visible_queryset(request)
    rows = nearest(spec, vector, limit, exclude_pks=[str(obj.pk)], visible=visible)
    return hydrate(rec, rows, "similar", visible)
