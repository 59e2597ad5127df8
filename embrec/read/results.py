"""Results and explanations: ranked keys turned into host objects, in rank order.

:func:`hydrate` loads the host objects of ranked candidates in one query through the
registration's results queryset (``select_related``/``prefetch_related``), keeping the order and
dropping objects the scope does not show. :func:`explain_results` attaches to personal results
the interacted items that contributed most, computed by PostgreSQL in one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connections, models, router

from embrec.interactions import interaction_weights
from embrec.items import Recommendable
from embrec.models import Embedding
from embrec.read.retrieval import Candidate

#: Result sources.
SOURCE_SIMILAR = "similar"
SOURCE_PERSONAL = "personal"
SOURCE_SEARCH = "search"
SOURCE_POPULAR = "popular"
SOURCE_RECENT = "recent"

#: How many interacted items an explanation lists.
EXPLANATION_SIZE = 3


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


def hydrate(
    rec: Recommendable,
    candidates: Sequence[Candidate],
    source: str,
    visible: models.QuerySet | None = None,
    *,
    with_similarity: bool = True,
) -> list[Result]:
    """Load host objects for ``candidates`` in one query, in rank order, dropping invisible ones.

    Without ``with_similarity`` (popularity and recency results) results carry no similarity.
    """
    qs = visible if visible is not None else rec.get_queryset()
    objects = in_bulk(rec, qs, [c.pk for c in candidates])
    return _results(candidates, objects, source, with_similarity)


def _results(
    candidates: Sequence[Candidate],
    objects: dict[str, Any],
    source: str,
    with_similarity: bool = True,
) -> list[Result]:
    return [
        Result(
            object=objects[c.pk],
            score=c.score,
            source=source,
            similarity=c.similarity if with_similarity else None,
        )
        for c in candidates
        if c.pk in objects
    ]


def in_bulk(rec: Recommendable, qs: models.QuerySet, pks: Sequence[str]) -> dict[str, Any]:
    """The objects of ``qs`` with the given keys (as strings), by key; keys the model's primary
    key cannot hold are skipped."""
    values = []
    for pk in pks:
        try:
            values.append(rec.pk_from_string(pk))
        except (ValidationError, ValueError, TypeError):
            continue
    if not values:
        return {}
    # The rank decides the order: no ORDER BY (the model's Meta.ordering would sort for nothing).
    objects = rec.get_results_queryset(qs.filter(pk__in=values)).order_by()
    return {str(obj.pk): obj for obj in objects}


def explain_results(
    rec: Recommendable,
    results: list[Result],
    user_id: Any,
    content_type_id: int,
    encoder: str,
    visible: models.QuerySet,
    *,
    identity: str | None = None,
) -> None:
    """Attach to each result the interacted items with the largest ``weight × cosine`` to it.

    The similarities are computed by PostgreSQL in one statement (results × positively weighted
    interacted items, top few per result); no item vector is loaded into Python. Only items in
    ``visible`` are named. Only vectors of one encoder identity are compared: ``identity`` (the
    version the results were ranked with); ``None`` before any version is registered.
    """
    if not results:
        return
    found = _contributions(user_id, content_type_id, encoder, [r.pk for r in results], identity)
    items = sorted({item for _, item, _ in found.rows})
    found.attach(results, in_bulk(rec, visible, items) if items else {})


def explained_results(
    rec: Recommendable,
    candidates: Sequence[Candidate],
    source: str,
    user_id: Any,
    content_type_id: int,
    encoder: str,
    visible: models.QuerySet,
    shown: models.QuerySet,
    *,
    identity: str | None = None,
) -> list[Result]:
    """:func:`hydrate` then :func:`explain_results` (explanations name items of ``shown``), with
    the results and the items they name loaded in one query when ``visible`` is ``shown`` (a
    query without filters)."""
    if not candidates or visible is not shown:
        results = hydrate(rec, candidates, source, visible)
        explain_results(rec, results, user_id, content_type_id, encoder, shown, identity=identity)
        return results
    found = _contributions(user_id, content_type_id, encoder, [c.pk for c in candidates], identity)
    items = {item for _, item, _ in found.rows}
    objects = in_bulk(rec, visible, [*(c.pk for c in candidates), *sorted(items)])
    results = _results(candidates, objects, source)
    found.attach(results, objects)
    return results


@dataclass
class _Contributions:
    """The rows of the explanations' statement: (result key, item key, contribution)."""

    rows: list[tuple[str, str, float]]
    weights: dict[str, float]
    kinds: dict[str, str]

    def attach(self, results: list[Result], objects: dict[str, Any]) -> None:
        """Set each result's explanation: up to ``EXPLANATION_SIZE`` items found in
        ``objects`` (the items the request may see), largest contribution first."""
        by_result: dict[str, list[Explanation]] = {}
        for pk, item, contribution in self.rows:
            if item not in objects:
                continue
            items = by_result.setdefault(pk, [])
            if len(items) < EXPLANATION_SIZE:
                items.append(
                    Explanation(
                        object=objects[item],
                        pk=item,
                        kind=self.kinds.get(item, ""),
                        weight=round(self.weights[item], 6),
                        contribution=round(float(contribution), 6),
                    )
                )
        for r in results:
            r.explanation = by_result.get(r.pk, [])


def _contributions(
    user_id: Any,
    content_type_id: int,
    encoder: str,
    pks: Sequence[str],
    identity: str | None = None,
) -> _Contributions:
    """The user's positively weighted recent items and their contribution to each of ``pks``
    (one statement for the events, one for the similarities; none without positive items), from
    vectors of ``identity`` only (any, before versions are registered)."""
    weights, kinds, _ = interaction_weights(user_id, content_type_id)
    positive = {pk: w for pk, w in weights.items() if w > 0}
    if not positive:
        return _Contributions([], positive, kinds)
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
        content_type_id,
        encoder,
        list(pks),
        identity,
        identity,
        # A few spare rows per result for items the request may not see.
        EXPLANATION_SIZE * 3,
    ]
    using = router.db_for_read(Embedding)
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return _Contributions(rows, positive, kinds)
