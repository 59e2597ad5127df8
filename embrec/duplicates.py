"""Near-duplicate pairs and isolated items, found with the HNSW index.

:func:`find` probes the index once per item: each batch of the model's vectors is joined
laterally with a k-nearest-neighbour query through pgvector's HNSW index (the same partial index
the read path uses, see :mod:`embrec.storage`)::

    SELECT a.id, a.object_pk, n.object_pk, n.distance
      FROM (SELECT id, object_pk, vector FROM embrec_embedding WHERE id = ANY(<batch of ids>)) a
      LEFT JOIN LATERAL (SELECT b.object_pk, b.vector::vector(d) <=> a.vector::vector(d) AS distance
                            FROM embrec_embedding b WHERE <the index's predicate>
                           ORDER BY distance LIMIT neighbours + 1) n ON TRUE

so the work grows as ``n × log n`` index probes, not ``n²`` comparisons, and vectors never leave
the database. The ids of the model's rows are read first (8 bytes per vector); each batch is
then read by primary key. Each item's neighbours give:

* **pairs**: two items whose cosine similarity is at least ``threshold`` (duplicate listings,
  the same text under two objects, copies with a typo). An item with more than ``neighbours``
  such partners reports its ``neighbours`` closest ones. Pairs are reported best first, at most
  ``limit`` of them; ``groups`` joins pairs that share items (a listing copied three times is
  one group of three).
* **isolated**: the ``isolated`` items whose nearest neighbour is least similar: items unlike any
  other (anomalies, wrong language, broken text, a category of one).

HNSW is approximate: a pair the index misses is not reported. ``ef_search`` (default
``EMBREC["EF_SEARCH"]``, at least ``neighbours + 1``) trades time for recall. :func:`explain`
returns PostgreSQL's plan of one batch to check that the index is used.

``manage.py embrec_duplicates`` prints the report; the admin's duplicates page shows it (computed
by the ``embrec.duplicates`` task and cached, see :func:`build`).
"""

from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass
from typing import Any

from django.db import connections, router, transaction

from embrec import analysis
from embrec.analysis import Target
from embrec.conf import embrec_settings
from embrec.exceptions import AnalysisError
from embrec.models import Embedding
from embrec.storage import IndexSpec, index_exists, scan_size

#: Default cosine similarity from which two items count as near-duplicates.
THRESHOLD = 0.95
#: Default neighbours fetched per item.
NEIGHBOURS = 10
#: Default bound on the pairs reported.
LIMIT = 1000
#: Items probed per statement.
BATCH_SIZE = 200


@dataclass
class Item:
    """One object of the report: its pk and name (``#pk (gone)`` when it was deleted)."""

    pk: str
    name: str


@dataclass
class Pair:
    """Two items and their cosine similarity."""

    a: Item
    b: Item
    similarity: float


@dataclass
class Isolated:
    """An item and the cosine similarity of its nearest other item."""

    item: Item
    similarity: float
    neighbour: Item


@dataclass
class DuplicateReport:
    """The result of :func:`find`."""

    model: str
    encoder: str
    identity: str
    threshold: float
    neighbours: int
    probed: int
    pairs: list[Pair]
    truncated: bool
    groups: list[list[Item]]
    isolated: list[Isolated]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what the command's ``--json`` prints and the cache holds)."""
        return asdict(self)


def clean_threshold(value: Any) -> float:
    """``value`` as a cosine similarity in ``(0, 1]``; :class:`AnalysisError` otherwise."""
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise AnalysisError(f"threshold must be a number, not {value!r}.") from None
    if not 0 < threshold <= 1:
        raise AnalysisError(f"threshold must be a cosine similarity in (0, 1], not {value!r}.")
    return threshold


def _clean(neighbours: int, limit: int, isolated: int, batch_size: int) -> None:
    if not 1 <= int(neighbours) <= 1000:
        raise AnalysisError(f"neighbours must be between 1 and 1000 (got {neighbours}).")
    if int(limit) < 0 or int(isolated) < 0:
        raise AnalysisError("limit and isolated must not be negative.")
    if int(batch_size) < 1:
        raise AnalysisError(f"batch_size must be at least 1 (got {batch_size}).")


def probe_sql(tgt: Target, neighbours: int, ids: list[int]) -> tuple[str, list]:
    """The statement of the k-NN probes of the rows ``ids`` (see the module documentation)."""
    spec = tgt.spec
    vtype = spec.vector_type
    probe = (
        f"SELECT b.object_pk, (b.vector::{vtype}) <=> (a.vector::{vtype}) AS distance "
        f"FROM embrec_embedding b WHERE {spec.predicate_sql('b')} AND b.identity = %s "
        f"ORDER BY {spec.search_sql('b', 'a.vector')} LIMIT %s"
    )
    k = int(neighbours) + 1
    if spec.reranked:
        # A bit or leading-dimensions index: its search returns scan_size rows, re-ranked by the
        # full vectors.
        probe = f"SELECT * FROM ({probe}) c ORDER BY c.distance LIMIT {k}"
    sql = (
        "SELECT a.id, a.object_pk, n.object_pk, n.distance FROM ("
        "SELECT id, object_pk, vector FROM embrec_embedding WHERE id = ANY(%s::bigint[])) a "
        f"LEFT JOIN LATERAL ({probe}) n ON TRUE ORDER BY a.id, n.distance"
    )
    return sql, [list(ids), tgt.identity, scan_size(spec, k)]


def _scan_settings(cursor, neighbours: int, ef_search: int | None, spec: IndexSpec) -> None:
    ef = max(int(ef_search or embrec_settings.EF_SEARCH), scan_size(spec, int(neighbours) + 1))
    cursor.execute(f"SET LOCAL hnsw.ef_search = {min(ef, 1000)}")
    # Rows of another encoder identity in the same index are skipped without emptying results.
    cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")


def _require_index(tgt: Target, using: str) -> None:
    if not index_exists(tgt.spec, using=connections[using]):
        raise AnalysisError(
            f"The HNSW index of {tgt.label} [{tgt.encoder}] is missing, so the neighbour probes "
            f"would compare every pair: run manage.py embrec_reindex {tgt.label} "
            "--rebuild-index first."
        )


def explain(
    model: Any,
    encoder: str | None = None,
    *,
    neighbours: int = NEIGHBOURS,
    batch_size: int = BATCH_SIZE,
    ef_search: int | None = None,
    analyze: bool = False,
) -> str:
    """PostgreSQL's plan of the first batch of probes (to check that the HNSW index is used)."""
    tgt = analysis.target(model, encoder)
    using = router.db_for_read(Embedding)
    first = next(analysis.id_batches(analysis.row_ids(tgt), batch_size), [])
    sql, params = probe_sql(tgt, neighbours, first)
    prefix = "EXPLAIN (ANALYZE, COSTS OFF) " if analyze else "EXPLAIN "
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        _scan_settings(cursor, neighbours, ef_search, tgt.spec)
        cursor.execute(prefix + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def find(
    model: Any,
    encoder: str | None = None,
    *,
    threshold: float = THRESHOLD,
    neighbours: int = NEIGHBOURS,
    limit: int = LIMIT,
    isolated: int = 20,
    batch_size: int = BATCH_SIZE,
    ef_search: int | None = None,
) -> DuplicateReport:
    """Near-duplicate pairs and isolated items of ``model``'s vectors under ``encoder``.

    ``model`` is a model class, an ``"app_label.model"`` label or a registration. Raises
    :class:`~embrec.exceptions.AnalysisError` for bad input, when there are no vectors or when the
    HNSW index is missing (the probes would then read every row for every item).
    """
    threshold = clean_threshold(threshold)
    _clean(neighbours, limit, isolated, batch_size)
    tgt = analysis.target(model, encoder)
    using = router.db_for_read(Embedding)
    _require_index(tgt, using)
    best: dict[tuple[str, str], float] = {}
    floor = threshold  # pairs below it can no longer make the report
    truncated = False
    lonely: list[tuple[float, str, str]] = []  # min-heap of (-similarity, pk, neighbour pk)
    probed = 0
    for batch in analysis.id_batches(analysis.row_ids(tgt), batch_size):
        sql, params = probe_sql(tgt, neighbours, batch)
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            _scan_settings(cursor, neighbours, ef_search, tgt.spec)
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        nearest: dict[str, tuple[float, str]] = {}
        seen_ids = set()
        for row_id, pk, other, distance in rows:
            seen_ids.add(row_id)
            if other is None or other == pk:
                nearest.setdefault(pk, (-2.0, ""))
                continue
            similarity = 1.0 - float(distance)
            if similarity > nearest.get(pk, (-2.0, ""))[0]:
                nearest[pk] = (similarity, other)
            if similarity >= floor and limit:
                key = (pk, other) if pk < other else (other, pk)
                if similarity > best.get(key, -2.0):
                    best[key] = similarity
        probed += len(seen_ids)
        if len(best) > 2 * limit:
            kept = heapq.nlargest(limit, best.items(), key=lambda kv: (kv[1], kv[0]))
            best = dict(kept)
            floor = max(floor, kept[-1][1])
            truncated = True
        if isolated:
            for pk, (similarity, other) in nearest.items():
                if not other:
                    continue  # the only item: no neighbour to compare with
                entry = (-similarity, pk, other)
                (heapq.heappush if len(lonely) < isolated else heapq.heappushpop)(lonely, entry)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ranked) > limit:
        ranked, truncated = ranked[:limit], True
    names = _names(tgt, {pk for pair, _ in ranked for pk in pair} | _lonely_pks(lonely))
    pairs = [Pair(names[a], names[b], round(sim, 5)) for (a, b), sim in ranked]
    return DuplicateReport(
        model=tgt.label,
        encoder=tgt.encoder,
        identity=tgt.identity,
        threshold=threshold,
        neighbours=int(neighbours),
        probed=probed,
        pairs=pairs,
        truncated=truncated,
        groups=groups(pairs),
        isolated=[
            Isolated(names[pk], round(-neg, 5), names[other])
            for neg, pk, other in sorted(lonely, reverse=True)
        ],
    )


def _lonely_pks(lonely: list[tuple[float, str, str]]) -> set[str]:
    return {pk for _, pk, _ in lonely} | {other for _, _, other in lonely}


def _names(tgt: Target, pks: set[str]) -> dict[str, Item]:
    objects = analysis.load_objects(tgt.rec, pks)
    return {
        pk: Item(pk, str(objects[pk]) if pk in objects else f"#{pk} (gone)") for pk in sorted(pks)
    }


def groups(pairs: list[Pair]) -> list[list[Item]]:
    """The connected groups of items that ``pairs`` join, largest first (union-find)."""
    parent: dict[str, str] = {}
    items: dict[str, Item] = {}

    def root(pk: str) -> str:
        while parent[pk] != pk:
            parent[pk] = parent[parent[pk]]
            pk = parent[pk]
        return pk

    for pair in pairs:
        for item in (pair.a, pair.b):
            items.setdefault(item.pk, item)
            parent.setdefault(item.pk, item.pk)
        ra, rb = root(pair.a.pk), root(pair.b.pk)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[Item]] = {}
    for pk in sorted(items):
        members.setdefault(root(pk), []).append(items[pk])
    return sorted(members.values(), key=lambda group: (-len(group), group[0].pk))


# --------------------------------------------------------------------------- cached, for pages


def build(model: Any, encoder: str | None = None, **params: Any) -> dict[str, Any]:
    """:func:`find`, cached for the admin's page (:func:`embrec.analysis.build`, kind
    ``"duplicates"``)."""
    return analysis.build("duplicates", find, model, encoder, **params)
