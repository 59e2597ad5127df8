"""The read pipeline: one function per query kind, from validated options to results.

Each function takes a :class:`~embrec.read.scope.Scope` (what the query may return) and the
validated :class:`~embrec.read.options.QueryOptions`, and runs the same stages:

1. the query vector: an object's stored vector, the encoded search text, or the user's vector.
   Stored vectors are selected inside the ANN statement (:class:`~embrec.read.retrieval.
   StoredVector`) when this process knows their dimensions; only when that finds nothing (not
   embedded, hidden, stale, first query) is the vector loaded, which says why;
2. :func:`rank`: the nearest visible, non-excluded vectors (:mod:`embrec.read.retrieval`), with
   the most popular visible objects added when popularity is blended in
   (:mod:`embrec.popularity`), re-ranked (:mod:`embrec.read.rerank`);
3. hydration (:mod:`embrec.read.results`): host objects in one query, in rank order;
4. for personal recommendations, explanations, and a top-up with popular then recent objects
   when the list is short.

Nothing here validates input or computes visibility: the scope and the options carry both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from django.db import models

from embrec.conf import embrec_settings
from embrec.exceptions import QueryError
from embrec.interactions import user_vector
from embrec.models import Embedding
from embrec.popularity import (
    popularity_ranking,
    popularity_ranking_sql,
    ranking_from_rows,
    visible_pks,
)
from embrec.read.options import QueryOptions
from embrec.read.rerank import blend, order
from embrec.read.results import (
    SOURCE_PERSONAL,
    SOURCE_POPULAR,
    SOURCE_RECENT,
    SOURCE_SEARCH,
    SOURCE_SIMILAR,
    Result,
    explained_results,
    hydrate,
)
from embrec.read.retrieval import (
    Candidate,
    QueryVector,
    StoredVector,
    get_vector,
    index_spec,
    known_spec,
    nearest,
    nearest_and_popular,
    stored_object_vector,
    stored_user_vector,
)
from embrec.read.scope import (
    Scope,
    encoder_for,
    similar_encoder_for,
    text_encoder_for,
)
from embrec.scoring import normalized_popularity
from embrec.storage import IndexSpec
from embrec.versions import read_version


def rank(
    scope: Scope, options: QueryOptions, spec: IndexSpec, vector: QueryVector
) -> list[Candidate]:
    """The ``options.limit`` best candidates for ``vector`` within ``scope``.

    Without re-ranking, the nearest vectors. With it, a pool of ``limit × RERANK_POOL_FACTOR``
    nearest, joined (for a popularity blend) by the ``RERANK_POPULAR_CANDIDATES`` most popular
    visible objects, scored by the blend and ordered by score or by MMR. A
    :class:`~embrec.read.retrieval.StoredVector` that finds no neighbour gives an empty list at
    once: the caller then loads the vector and ranks again (see :func:`similar`).
    """
    stored = isinstance(vector, StoredVector)
    if not isinstance(vector, StoredVector) and (
        not np.isfinite(vector).all() or not np.any(vector)
    ):
        raise QueryError("The query has nothing to compare with (an all-zero vector).")
    limit = options.limit
    with_vectors = options.mmr_lambda is not None
    pool = limit * max(int(embrec_settings.RERANK_POOL_FACTOR), 1) if options.reranks else limit
    ranking = None
    if options.popularity:
        # The most popular visible items join the nearest (visibility, filters and exclusions
        # hold for them too), and the blend normalises by the visible maximum: all in the
        # statement of the search.
        count = int(embrec_settings.RERANK_POPULAR_CANDIDATES or 0)
        candidates, rows, popular = nearest_and_popular(
            spec,
            vector,
            pool,
            lambda skip: popularity_ranking_sql(
                scope.content_type_id, scope.visible, scope.exclusions, count, skip
            ),
            exclusions=scope.exclusions,
            visible=scope.visible,
            ef_search=options.ef_search,
            with_vectors=with_vectors,
        )
        if stored and not candidates:
            return []
        ranking = ranking_from_rows(rows)
        candidates += popular
    else:
        candidates = nearest(
            spec,
            vector,
            pool,
            exclusions=scope.exclusions,
            visible=scope.visible,
            ef_search=options.ef_search,
            with_vectors=with_vectors,
        )
        if stored and not candidates:
            return []
    blend(candidates, scope.content_type_id, options.popularity, options.recency, ranking)
    return order(candidates, limit, options.mmr_lambda)


def similar(obj: models.Model, scope: Scope, options: QueryOptions) -> list[Result]:
    """Objects of ``scope`` nearest to ``obj``'s stored vector, ``obj`` itself left out."""
    return similar_to_key(obj.pk, scope, options, load=lambda: obj)


def similar_to_key(
    pk: Any,
    scope: Scope,
    options: QueryOptions,
    *,
    load: Callable[[], models.Model],
    source_shown: bool = False,
) -> list[Result]:
    """Objects of ``scope`` nearest to the stored vector of object ``pk``, which is left out.

    The vector is selected inside the ANN statement, with (``source_shown``) the condition that
    ``scope.shown`` holds the object, so a request costs the search and the hydration. When that
    finds nothing, ``load()`` returns the object (or raises, e.g. a 404 for a hidden one) and
    its vector is loaded (raising :class:`~embrec.exceptions.NotEmbedded` when there is none).
    """
    rec = scope.rec
    encoder = similar_encoder_for(rec, options.encoder)
    scope = scope.excluding([pk])
    version = read_version(encoder)
    spec = known_spec(rec, encoder, version)
    if spec is not None:
        vector = stored_object_vector(spec, pk, scope.shown if source_shown else None)
        candidates = rank(scope, options, spec, vector)
        if candidates:
            return hydrate(rec, candidates, SOURCE_SIMILAR, scope.visible)
    loaded, spec = get_vector(load(), encoder, version)
    return hydrate(rec, rank(scope, options, spec, loaded), SOURCE_SIMILAR, scope.visible)


def search(scope: Scope, options: QueryOptions) -> list[Result]:
    """Objects of ``scope`` nearest to ``options.text``, encoded in this process."""
    rec = scope.rec
    encoder = text_encoder_for(rec, options.encoder)
    version = read_version(encoder)
    vector = version.encoder().encode([options.text or ""])[0]
    if not np.any(vector):
        raise QueryError(
            "The search text has no words the encoder knows.", code="empty_query", field="q"
        )
    spec = index_spec(rec, encoder, vector.shape[0], version)
    return hydrate(rec, rank(scope, options, spec, vector), SOURCE_SEARCH, scope.visible)


def popular(scope: Scope, options: QueryOptions) -> list[Result]:
    """The most popular objects of ``scope``, topped up with the newest embedded ones."""
    return popular_results(scope, options.limit, encoder_for(scope.rec, options.encoder))


def recommend(scope: Scope, options: QueryOptions) -> list[Result]:
    """Personal recommendations for ``scope.user_id``: nearest to the user's vector, explained,
    topped up with popular objects; popular objects alone without a user or a user vector."""
    rec = scope.rec
    encoder = encoder_for(rec, options.encoder)
    if scope.user_id is None:
        return popular_results(scope, options.limit, encoder)
    version = read_version(encoder)
    candidates: list[Candidate] = []
    spec = known_spec(rec, encoder, version)
    if spec is not None:
        candidates = rank(scope, options, spec, stored_user_vector(spec, scope.user_id))
    if not candidates:
        # No fresh stored vector (or no neighbour): compute the vector, as it is stored.
        vector = user_vector(scope.user_id, rec, encoder, identity=version.identity)
        if vector is None:
            return popular_results(scope, options.limit, encoder)
        spec = index_spec(rec, encoder, vector.shape[0], version)
        candidates = rank(scope, options, spec, vector)
    if options.explain:
        # Explanations may name items outside the filters, never items the request cannot see.
        results = explained_results(
            rec,
            candidates,
            SOURCE_PERSONAL,
            scope.user_id,
            scope.content_type_id,
            encoder,
            scope.visible,
            scope.shown,
            identity=version.identity,
        )
    else:
        results = hydrate(rec, candidates, SOURCE_PERSONAL, scope.visible)
    if len(results) >= options.limit:
        return results
    taken = scope.excluding(r.pk for r in results)
    return results + popular_results(taken, options.limit - len(results), encoder)


def popular_results(scope: Scope, limit: int, encoder: str) -> list[Result]:
    """The ``limit`` most popular objects of ``scope`` (``"popular"``), topped up with the newest
    embedded objects (``"recent"``) when too few are popular."""
    rec, visible = scope.rec, scope.visible
    ranking = popularity_ranking(scope.content_type_id, visible, scope.exclusions, limit)
    candidates = [
        Candidate(pk=pk, distance=1.0, score=float(normalized_popularity(p, ranking.maximum)))
        for pk, p in ranking.top
    ]
    results = hydrate(rec, candidates, SOURCE_POPULAR, visible, with_similarity=False)
    if len(results) < limit:
        # Nothing (or too little) is popular yet: newest embedded items.
        taken = scope.exclusions.excluding(r.pk for r in results)
        rows = Embedding.objects.filter(
            content_type_id=scope.content_type_id,
            encoder=encoder,
            object_pk__in=visible_pks(visible),
        )
        identity = read_version(encoder).identity
        if identity is not None:
            rows = rows.filter(identity=identity)
        recent = list(
            rows.exclude(taken.q())
            .order_by("-created_at", "-id")
            .values_list("object_pk", flat=True)[: limit - len(results)]
        )
        results += hydrate(
            rec,
            [Candidate(pk=pk, distance=1.0) for pk in recent],
            SOURCE_RECENT,
            visible,
            with_similarity=False,
        )
    return results
