"""Top-K ranking metrics with binary relevance.

For one user with recommended list ``ranked`` (best first) and held-out set ``relevant``:

* ``Recall@K`` = |top-K ∩ relevant| / |relevant|
* ``HitRate@K`` = 1 if top-K contains any relevant item, else 0
* ``NDCG@K`` = DCG / IDCG with DCG = Σ_{rank r ≤ K, item relevant} 1 / log2(r + 1) and IDCG the
  DCG of a perfect list, i.e. Σ_{r=1}^{min(K, |relevant|)} 1 / log2(r + 1)

Each is averaged over evaluated users. ``Coverage@K`` is the share of the catalog that appears in
at least one user's top K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dcg(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Discounted cumulative gain of the first ``k`` entries of ``ranked``."""
    return float(
        sum(1.0 / np.log2(pos + 2) for pos, item in enumerate(ranked[:k]) if item in relevant)
    )


def ndcg_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Normalised DCG at ``k`` (0 when ``relevant`` is empty)."""
    if not relevant:
        return 0.0
    ideal = sum(1.0 / np.log2(pos + 2) for pos in range(min(k, len(relevant))))
    return dcg(ranked, relevant, k) / ideal


def recall_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Share of ``relevant`` found in the first ``k`` entries of ``ranked``."""
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & relevant) / len(relevant)


def hit_rate_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """1.0 if any relevant item is in the first ``k`` entries, else 0.0."""
    return 1.0 if set(ranked[:k]) & relevant else 0.0


def coverage(recommended: Sequence[Sequence[int]], n_items: int) -> float:
    """Share of the catalog (``n_items`` items) recommended to at least one user."""
    if n_items == 0:
        return 0.0
    seen: set[int] = set()
    for ranked in recommended:
        seen.update(int(i) for i in ranked)
    return len(seen) / n_items


def summarize(
    recommended: Sequence[Sequence[int]],
    relevant: Sequence[set[int]],
    k: int,
    n_items: int,
) -> dict[str, float]:
    """Mean Recall@K, NDCG@K, HitRate@K over users and Coverage@K of the catalog."""
    if len(recommended) != len(relevant):
        raise ValueError("recommended and relevant must have one entry per user")
    n = max(len(relevant), 1)
    pairs = [([int(i) for i in r], s) for r, s in zip(recommended, relevant, strict=True)]
    return {
        f"ndcg@{k}": float(sum(ndcg_at_k(r, s, k) for r, s in pairs) / n),
        f"recall@{k}": float(sum(recall_at_k(r, s, k) for r, s in pairs) / n),
        f"hit_rate@{k}": float(sum(hit_rate_at_k(r, s, k) for r, s in pairs) / n),
        f"coverage@{k}": coverage([r[:k] for r, _ in pairs], n_items),
    }


def top_k(scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Indices of the ``k`` best scores per row, best first; ``exclude[row]`` are never chosen.

    Ties are broken by the lower item index, so results are deterministic.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        for row, items in enumerate(exclude):
            if len(items):
                scores[row, items] = -np.inf
    k = min(k, scores.shape[1])
    # Stable sort on the negated scores: equal scores keep index order.
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]
