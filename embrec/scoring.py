"""The re-ranking formula, shared by the read path and the evaluation.

Pure functions over numbers or numpy arrays (no Django): :mod:`embrec.queries` scores candidates
with them, and :class:`embrec.evaluation.methods.EmbeddingMethod` scores whole catalogs with the
same code, so an evaluated configuration is the one a site deploys.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


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
