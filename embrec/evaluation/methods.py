"""embrec's own recommenders under evaluation: encoders, item2vec, hybrids.

An :class:`EmbeddingMethod` reproduces what the read path does for a personalised query, in
memory and from the training split only:

1. item vectors come from an :class:`ItemVectors` source — content vectors (they never look at
   interactions), item2vec retrained on the *training* interactions, or a hybrid of both;
2. a user's profile is the weighted mean of the unit vectors of their *training* items —
   optionally only the ``last`` most recent ones (``EMBREC["USER_VECTOR_MAX_INTERACTIONS"]``) and
   decayed with ``half_life_days`` relative to the user's latest training interaction
   (``USER_VECTOR_HALF_LIFE_DAYS``); negative weights subtract;
3. items are scored by cosine similarity to the profile, optionally blended with popularity as in
   the read path: ``(1 - p) * cosine + p * log1p(count) / log1p(max count)`` (``popularity=p``),
   where counts are training users per item; with ``pool`` only the ``pool`` nearest items are
   re-ranked (the read path's ``limit * RERANK_POOL_FACTOR``); with ``uniform`` every training
   interaction weighs 1 in the profile (a site recording every kind with the same weight);
4. items without a vector cannot be recommended (they are not in the index).

Held-out interactions are never used: not to train item2vec, not in profiles, not in popularity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embrec.evaluation.baselines import Method
from embrec.evaluation.split import InteractionLog, Split


class ItemVectors:
    """A source of item vectors for the catalog of a split.

    :meth:`vectors` returns ``(matrix, mask)``: an ``(n_items, d)`` float32 matrix of unit rows
    and a boolean mask of the items that have a vector.
    """

    name: str = "vectors"

    def vectors(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class FixedItemVectors(ItemVectors):
    """Precomputed vectors (content encoders: they do not depend on interactions)."""

    def __init__(self, matrix: np.ndarray, mask: np.ndarray | None = None, name: str = "fixed"):
        self.matrix = _unit_rows(np.asarray(matrix, dtype=np.float32))
        self.mask = (
            np.asarray(mask, dtype=bool)
            if mask is not None
            else np.linalg.norm(self.matrix, axis=1) > 0
        )
        self.name = name

    def vectors(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        if self.matrix.shape[0] != split.train.n_items:
            raise ValueError(
                f"{self.name}: {self.matrix.shape[0]} vectors for {split.train.n_items} items"
            )
        return self.matrix, self.mask


class Item2VecItemVectors(ItemVectors):
    """item2vec trained on the training interactions of the split (time-ordered per user)."""

    def __init__(self, encoder, name: str = "item2vec"):
        self.encoder = encoder
        self.name = name

    def vectors(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        train = split.train
        min_weight = float(self.encoder.options.get("min_weight", 0.0))
        # Same rule as training from the database: only positive signals are co-consumption.
        behaviour = train.subset(train.weights > min_weight)
        sequences = [[train.items[i] for i in seq] for seq in behaviour.sequences()]
        tokens, unit = self.encoder.fit(sequences)
        position = {key: n for n, key in enumerate(train.items)}
        matrix = np.zeros((train.n_items, unit.shape[1]), dtype=np.float32)
        mask = np.zeros(train.n_items, dtype=bool)
        for token, vector in zip(tokens, unit, strict=True):
            row = position[token]
            matrix[row] = vector
            mask[row] = True
        return matrix, mask


class HybridItemVectors(ItemVectors):
    """Combination of other sources, as :class:`~embrec.encoders.hybrid.HybridEncoder` does."""

    def __init__(
        self,
        parts: Sequence[ItemVectors],
        weights: Sequence[float],
        mode: str = "concat",
        name: str = "hybrid",
    ):
        self.parts = list(parts)
        self.weights = list(weights)
        self.mode = mode
        self.name = name

    def vectors(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        from embrec.encoders.hybrid import combine_matrices

        computed = [part.vectors(split) for part in self.parts]
        return combine_matrices(
            [m for m, _ in computed], [k for _, k in computed], self.weights, self.mode
        )


class EmbeddingMethod(Method):
    """Personalised recommendations from item vectors and a profile (see the module docstring)."""

    def __init__(
        self,
        name: str,
        source: ItemVectors,
        *,
        last: int | None = None,
        half_life_days: float | None = None,
        popularity: float = 0.0,
        pool: int | None = None,
        uniform: bool = False,
    ):
        if not 0.0 <= popularity < 1.0:
            raise ValueError("popularity must be in [0, 1)")
        if last is not None and last < 1:
            raise ValueError("last must be at least 1")
        self.name = name
        self.source = source
        self.last = last
        self.half_life_days = half_life_days
        self.popularity = popularity
        self.pool = pool
        self.uniform = uniform
        bits = [source.name]
        bits.append(f"last {last}" if last else "all training items")
        if half_life_days:
            bits.append(f"half-life {half_life_days:g} d")
        if popularity:
            bits.append(f"popularity {popularity:g}")
        if pool:
            bits.append(f"pool {pool}")
        if uniform:
            bits.append("equal weights")
        self.description = ", ".join(bits)

    def fit(self, split: Split) -> None:
        matrix, mask = self.source.vectors(split)
        self.items = matrix
        self.mask = mask
        train = split.train
        if self.uniform:
            train = train.subset(np.ones(len(train), dtype=bool))
            train.weights = np.ones_like(train.weights)
        self.profiles = user_profiles(
            train, matrix, mask, last=self.last, half_life_days=self.half_life_days
        )
        counts = np.asarray(split.train.matrix(binary=True).sum(axis=0)).ravel()
        top = counts.max() if counts.size else 0
        self.pop = np.log1p(counts) / np.log1p(top) if top > 0 else np.zeros_like(counts)

    def score(self, users: np.ndarray) -> np.ndarray:
        cosine = self.profiles[users] @ self.items.T
        scores = (1.0 - self.popularity) * cosine + self.popularity * self.pop
        if self.pool:
            # Only the `pool` nearest items by cosine are re-ranked (as the read path does).
            pool = min(self.pool, cosine.shape[1] - 1)
            masked = np.where(self.mask, cosine, -np.inf)
            outside = np.argpartition(-masked, pool, axis=1)[:, pool:]
            np.put_along_axis(scores, outside, -1e9, axis=1)
        scores[:, ~self.mask] = -1e9
        # A user without a usable profile gets popularity order (the read path's fallback).
        empty = ~np.any(self.profiles[users], axis=1)
        if empty.any():
            scores[empty] = np.where(self.mask, self.pop, -1e9)
        return scores


def user_profiles(
    train: InteractionLog,
    matrix: np.ndarray,
    mask: np.ndarray,
    *,
    last: int | None = None,
    half_life_days: float | None = None,
) -> np.ndarray:
    """Unit profile vector per user from their training interactions only.

    ``last``: only each user's ``last`` most recent interactions (ties by item key) count.
    ``half_life_days``: weights decay by ``0.5 ** (age / half_life)``, age measured from the
    user's latest training interaction. Interactions with items lacking a vector are skipped.
    """
    order = train.chronological_order()
    users = train.user_index[order]
    items = train.item_index[order]
    times = train.timestamps[order]
    weights = train.weights[order].astype(np.float64)
    keep = mask[items]
    users, items, times, weights = users[keep], items[keep], times[keep], weights[keep]
    if last:
        # Position from the end within each user's (sorted) run.
        counts = np.bincount(users, minlength=train.n_users)
        ends = np.cumsum(counts)
        from_end = ends[users] - np.arange(users.shape[0]) - 1
        recent = from_end < last
        users, items, times, weights = users[recent], items[recent], times[recent], weights[recent]
    if half_life_days:
        latest = np.full(train.n_users, -np.inf)
        np.maximum.at(latest, users, times)
        age_days = (latest[users] - times) / 86400.0
        weights = weights * 0.5 ** (age_days / float(half_life_days))
    profiles = np.zeros((train.n_users, matrix.shape[1]), dtype=np.float64)
    np.add.at(profiles, users, weights[:, None] * matrix[items])
    return _unit_rows(profiles.astype(np.float32))


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32)
