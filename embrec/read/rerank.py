"""Re-ranking of ANN candidates: a popularity/recency blend, and diversity (MMR).

:func:`blend` scores candidates with :func:`embrec.scoring.blend_scores` (the similarity, the
smoothed popularity normalised by the most popular visible object, and the recency); :func:`mmr`
then picks a diverse list by maximal marginal relevance. Both work on the candidates in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from django.utils import timezone

from embrec.conf import embrec_settings
from embrec.popularity import PopularityRanking, popularity_prior_users, popularity_scores
from embrec.read.retrieval import Candidate
from embrec.scoring import blend_scores, smoothed_popularity
from embrec.vectors import l2_normalize


def blend(
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
        if ranking is not None:  # its scores cover every candidate
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
        prior = popularity_prior_users(content_type_id, float(quantile))
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


def mmr(candidates: Sequence[Candidate], limit: int, lambda_: float) -> list[Candidate]:
    """Maximal marginal relevance: greedily pick ``argmax λ·score − (1−λ)·max sim(selected)``.

    ``λ = 1`` keeps the relevance order; lower values favour items unlike those already picked.
    Candidates need ``vector`` set.
    """
    if not candidates:
        return []
    rows = [c.vector for c in candidates if c.vector is not None]
    if len(rows) != len(candidates):
        raise ValueError("mmr() needs the candidates' vectors (nearest(..., with_vectors=True)).")
    vectors = l2_normalize(np.stack(rows).astype(np.float64), dtype=np.float64)
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


def order(candidates: list[Candidate], limit: int, mmr_lambda: float | None) -> list[Candidate]:
    """The final ``limit`` candidates: by MMR when ``mmr_lambda`` is set, else by score (ties
    by distance, then key)."""
    if mmr_lambda is not None:
        return mmr(candidates, limit, mmr_lambda)
    candidates.sort(key=lambda c: (-c.score, c.distance, c.pk))
    return candidates[:limit]
