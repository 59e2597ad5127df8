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
    recommended: Sequence[Sequence[int] | np.ndarray],
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


def top_k(
    scores: np.ndarray,
    k: int,
    exclude: Sequence[np.ndarray] | None = None,
    tiebreak: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the ``k`` best scores per row, best first; ``exclude[row]`` are never chosen.

    Ties are broken by the lower item index, so results are deterministic; with ``tiebreak`` (an
    array of the shape of ``scores``) by its lower value instead — the evaluator passes seeded
    random values, different for each user, so a method that cannot tell items apart (constant
    scores) gets chance-level figures rather than whatever the catalog order correlates with.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        for row, items in enumerate(exclude):
            if len(items):
                scores[row, items] = -np.inf
    k = min(k, scores.shape[1])
    if tiebreak is not None:
        return np.lexsort((np.asarray(tiebreak), -scores), axis=-1)[:, :k]
    # Stable sort on the negated scores: equal scores keep index order.
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def per_user(
    recommended: Sequence[Sequence[int] | np.ndarray], relevant: Sequence[set[int]], k: int
) -> dict[str, np.ndarray]:
    """Each user's NDCG@K, Recall@K and HitRate@K (arrays aligned with the users), for paired
    comparisons."""
    pairs = [([int(i) for i in r], s) for r, s in zip(recommended, relevant, strict=True)]
    return {
        f"ndcg@{k}": np.array([ndcg_at_k(r, s, k) for r, s in pairs], dtype=np.float64),
        f"recall@{k}": np.array([recall_at_k(r, s, k) for r, s in pairs], dtype=np.float64),
        f"hit_rate@{k}": np.array([hit_rate_at_k(r, s, k) for r, s in pairs], dtype=np.float64),
    }


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    *,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap over users of the difference of means ``mean(a) - mean(b)``.

    ``a`` and ``b`` are per-user values of two methods on the *same* users. Users are resampled
    with replacement ``samples`` times; the interval is the percentile interval of the resampled
    differences, and ``ratio_low``/``ratio_high`` that of ``mean(a) / mean(b)``.
    ``p_not_better`` is the share of resamples where ``a`` does not beat ``b``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("a and b must be non-empty per-user arrays of the same length")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(samples, a.size))
    ma, mb = a[idx].mean(axis=1), b[idx].mean(axis=1)
    diffs = ma - mb
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(mb > 0, ma / mb, np.nan)
    tail = (1 - confidence) / 2 * 100
    mean_b = float(b.mean())
    return {
        "difference": float(a.mean() - b.mean()),
        "low": float(np.percentile(diffs, tail)),
        "high": float(np.percentile(diffs, 100 - tail)),
        "ratio": float(a.mean() / mean_b) if mean_b > 0 else float("nan"),
        "ratio_low": float(np.nanpercentile(ratios, tail)) if mean_b > 0 else float("nan"),
        "ratio_high": float(np.nanpercentile(ratios, 100 - tail)) if mean_b > 0 else float("nan"),
        "p_not_better": float(np.mean(diffs <= 0)),
    }


# ----------------------------------------------------------------------------- similar items


def next_item_hit_rate(lists: dict[int, Sequence[int]], pairs: Sequence[tuple[int, int]]) -> float:
    """Share of ``(previous item, next item)`` pairs where the similar list of the previous item
    contains the next one. ``lists`` maps a source item to its similar list (a source without a
    list counts as a miss)."""
    if not pairs:
        return 0.0
    hits = sum(1 for prev, nxt in pairs if nxt in set(int(i) for i in lists.get(prev, ())))
    return hits / len(pairs)


def hub_share(lists: Sequence[Sequence[int]], top: int = 20) -> float:
    """Share of all list slots taken by the ``top`` most frequent results (hubness: 0 for
    perfectly spread lists; a handful of hubs everywhere pushes it towards 1)."""
    counts: dict[int, int] = {}
    slots = 0
    for ranked in lists:
        for item in ranked:
            counts[int(item)] = counts.get(int(item), 0) + 1
            slots += 1
    if slots == 0:
        return 0.0
    return sum(sorted(counts.values(), reverse=True)[:top]) / slots


def popularity_ratio(lists: dict[int, Sequence[int]], popularity: np.ndarray) -> float:
    """Median popularity of all results over the median popularity of their sources (1: results
    as popular as what they are similar to; below 1: lists drift to obscure items)."""
    results = [popularity[int(i)] for ranked in lists.values() for i in ranked]
    sources = [popularity[int(s)] for s in lists]
    if not results or not sources:
        return 0.0
    denominator = float(np.median(sources))
    return float(np.median(results)) / denominator if denominator > 0 else float("nan")


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b| (0 when both are empty)."""
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def coherence(lists: dict[int, Sequence[int]], fields: Sequence[set]) -> float:
    """Mean Jaccard overlap of a declared field (e.g. genres) between each source and each of its
    results, over all (source, result) pairs."""
    values = [jaccard(fields[s], fields[int(i)]) for s, ranked in lists.items() for i in ranked]
    return float(np.mean(values)) if values else 0.0
