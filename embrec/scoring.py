"""The re-ranking formula, shared by the read path and the evaluation.

Pure functions over numbers or numpy arrays (no Django): :mod:`embrec.read.rerank` scores
candidates with them, and :class:`embrec.evaluation.methods.EmbeddingMethod` scores whole catalogs
with the same code, so an evaluated configuration is the one a site deploys.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def half_life_decay(age_days: Any, half_life_days: float | None) -> Any:
    """``0.5 ** (age_days / half_life_days)``: the share of a weight left after ``age_days``
    (numbers or arrays); 1 when ``half_life_days`` is None or 0 (no decay).

    User vectors decay interactions with it (``USER_VECTOR_HALF_LIFE_DAYS``), the recency blend
    decays items' freshness (``RECENCY_HALF_LIFE_DAYS``), and the evaluation does the same.
    """
    if np.ndim(age_days) == 0:
        return 0.5 ** (float(age_days) / float(half_life_days)) if half_life_days else 1.0
    age_days = np.asarray(age_days, dtype=np.float64)
    if not half_life_days:
        return np.ones_like(age_days)
    return 0.5 ** (age_days / float(half_life_days))


def normalized_popularity(users: Any, top: float) -> Any:
    """``log1p(users) / log1p(top)`` in ``[0, 1]``; 0 when nothing is popular (``top <= 0``).

    ``users`` is an item's popularity (distinct users with a positive interaction), ``top`` the
    popularity of the most popular item the query could return.
    """
    if top <= 0:
        return np.multiply(users, 0.0)
    return np.log1p(users) / math.log1p(top)


def blend_scores(
    similarity: Any,
    popularity_share: float,
    popularity_norm: Any = 0.0,
    recency_share: float = 0.0,
    freshness: Any = 0.0,
) -> Any:
    """``(1 − p − r)·similarity + p·popularity_norm + r·freshness`` (``p``, ``r``: shares)."""
    return (
        (1.0 - popularity_share - recency_share) * similarity
        + popularity_share * popularity_norm
        + recency_share * freshness
    )


def popularity_prior(counts: Any, quantile: float) -> float:
    """The ``quantile`` (0-1) of the positive popularity ``counts``: the popularity assumed for an
    item without history (0 when no item has any)."""
    values = np.asarray(counts, dtype=np.float64)
    values = values[values > 0]
    if not values.size:
        return 0.0
    return float(np.quantile(values, float(quantile)))


def smoothed_popularity(users: Any, top: float, prior: float = 0.0, strength: float = 0.0) -> Any:
    """Normalised popularity shrunk towards a prior by support: ``s·own + (1 − s)·prior_norm``
    with ``s = users / (users + strength)``, ``own`` and ``prior_norm`` the
    :func:`normalized_popularity` of ``users`` and of ``prior`` (users).

    A new item (0 users) gets the prior's score instead of 0, so a popularity blend does not bury
    it before anyone could see it; an item with many users keeps (almost) its own popularity.
    ``prior <= 0`` or ``strength <= 0`` is plain :func:`normalized_popularity`."""
    own = normalized_popularity(users, top)
    if prior <= 0 or strength <= 0 or top <= 0:
        return own
    users = np.asarray(users, dtype=np.float64)
    share = users / (users + float(strength))
    base = normalized_popularity(min(float(prior), float(top)), top)
    result = share * own + (1.0 - share) * base
    return float(result) if np.ndim(result) == 0 else result
