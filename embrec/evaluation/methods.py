"""embrec's own recommenders under evaluation: encoders, item2vec, hybrids.

An :class:`EmbeddingMethod` reproduces what the read path does for a personalised query, in
memory and from the training split only:

1. item vectors come from an :class:`ItemVectors` source — content vectors (they never look at
   interactions), item2vec retrained on the *training* interactions, or a hybrid of both;
2. a user's profile is the weighted mean of the unit vectors of their *training* items —
   optionally only the ``last`` most recently touched distinct items
   (``EMBREC["USER_VECTOR_MAX_INTERACTIONS"]``), decayed with ``half_life_days`` relative to the
   user's latest counted interaction (``USER_VECTOR_HALF_LIFE_DAYS``), with ``uniform`` weights
   (``USER_VECTOR_WEIGHTING = "uniform"``: positive events 1, negative ones 0); negative weights
   subtract — :func:`user_profiles` mirrors :func:`embrec.interactions.interaction_weights`;
3. items are scored with the read path's own formula (:mod:`embrec.scoring`):
   ``(1 - p) * cosine + p * log1p(users) / log1p(max users)`` (``popularity=p``), where users
   are distinct training users with a positive interaction and the maximum is over the catalog;
   with ``pool`` only the read path's re-rank candidates compete: the ``pool`` nearest unseen items
   (``limit * RERANK_POOL_FACTOR``) plus the ``popular_pool`` most popular unseen items
   (``RERANK_POPULAR_CANDIDATES``); without it the whole catalog is ranked;
4. items without a vector cannot be recommended (they are not in the index).

tests/test_evaluation_consistency.py checks on a catalog stored in PostgreSQL that this scorer's
top 10 is :func:`embrec.recommend`'s.

Held-out interactions are never used: not to train item2vec, not in profiles, not in popularity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from embrec.encoders.adaptive import blend, fit_map
from embrec.encoders.als import fold_in
from embrec.encoders.finetune import finetune_texts, mine_pairs, validate_params
from embrec.encoders.hybrid import combine_matrices
from embrec.evaluation.baselines import Method
from embrec.evaluation.split import InteractionLog, Split, _key_rank
from embrec.scoring import (
    blend_scores,
    half_life_decay,
    normalized_popularity,
    popularity_prior,
    smoothed_popularity,
)
from embrec.vectors import l2_normalize


class ItemVectors:
    """A source of item vectors for the catalog of a split.

    :meth:`vectors` returns ``(matrix, mask)``: an ``(n_items, d)`` float32 matrix of unit rows
    and a boolean mask of the items that have a vector.
    """

    name: str = "vectors"
    #: A trained source's model of the split last computed (set by trained sources).
    fitted: Any

    def vectors(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class FixedItemVectors(ItemVectors):
    """Precomputed vectors (content encoders: they do not depend on interactions)."""

    def __init__(self, matrix: np.ndarray, mask: np.ndarray | None = None, name: str = "fixed"):
        self.matrix = l2_normalize(np.asarray(matrix, dtype=np.float32))
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
        popular_pool: int = 0,
        uniform: bool = False,
        prior: float | None = None,
        prior_strength: float = 5.0,
    ):
        if not 0.0 <= popularity < 1.0:
            raise ValueError("popularity must be in [0, 1)")
        if last is not None and last < 1:
            raise ValueError("last must be at least 1")
        if popular_pool < 0:
            raise ValueError("popular_pool must not be negative")
        self.name = name
        self.source = source
        self.last = last
        self.half_life_days = half_life_days
        self.popularity = popularity
        self.pool = pool
        self.popular_pool = popular_pool
        self.uniform = uniform
        # POPULARITY_PRIOR / POPULARITY_PRIOR_STRENGTH of the read path.
        self.prior = prior
        self.prior_strength = prior_strength
        bits = [source.name]
        bits.append(f"last {last}" if last else "all training items")
        if half_life_days:
            bits.append(f"half-life {half_life_days:g} d")
        if popularity:
            bits.append(f"popularity {popularity:g}")
        if pool:
            bits.append(f"pool {pool}" + (f" + {popular_pool} popular" if popular_pool else ""))
        if uniform:
            bits.append("equal weights")
        if prior is not None and popularity:
            bits.append(f"popularity prior q{prior:g} n{prior_strength:g}")
        self.description = ", ".join(bits)

    def fit(self, split: Split) -> None:

        matrix, mask = self.source.vectors(split)
        self.items = matrix
        self.mask = mask
        train = split.train
        self.profiles = user_profiles(
            train,
            matrix,
            mask,
            last=self.last,
            half_life_days=self.half_life_days,
            uniform=self.uniform,
        )
        fold_in_profiles = getattr(self.source, "fold_in_profiles", None)
        if fold_in_profiles is not None:  # encoders with their own user model (ALS)
            self.profiles = fold_in_profiles(train)
        # Popularity as the read path counts it: distinct users with a positive interaction.
        self.counts = popularity_counts(train)
        # Normalised by the most popular item of the catalog, vector or not (the read path's
        # maximum over the visible objects).
        top = float(self.counts.max()) if self.counts.size else 0.0
        # The fallback for users without a profile is the read path's popular(): no prior.
        self.plain_pop = np.asarray(normalized_popularity(self.counts, top), dtype=np.float64)
        prior = 0.0 if self.prior is None else popularity_prior(self.counts, self.prior)
        self.pop = np.asarray(
            smoothed_popularity(self.counts, top, prior, self.prior_strength), dtype=np.float64
        )
        # What the read path excludes (exclude_seen): every item the user interacted with.
        self.seen = train.matrix(binary=True).tocsr()
        # Popular candidates in the read path's order: most users first, ties by key. Like the
        # read path, items without a vector take a place among them and are then dropped.
        rank = _key_rank(train.items)
        popular = np.flatnonzero(self.counts > 0)
        self.popular_order = popular[np.lexsort((rank[popular], -self.counts[popular]))]

    def score(self, users: np.ndarray) -> np.ndarray:

        cosine = self.profiles[users] @ self.items.T
        scores = np.asarray(blend_scores(cosine, self.popularity, self.pop[None, :]))
        if self.pool:
            scores = self._restrict_to_pool(users, cosine, scores)
        scores[:, ~self.mask] = -1e9
        # A user without a usable profile gets popularity order (the read path's fallback).
        empty = ~np.any(self.profiles[users], axis=1)
        if empty.any():
            scores[empty] = np.where(self.mask, self.plain_pop, -1e9)
        return scores

    def _restrict_to_pool(
        self, users: np.ndarray, cosine: np.ndarray, scores: np.ndarray
    ) -> np.ndarray:
        """Keep only the read path's re-rank candidates: the ``pool`` nearest unseen items plus,
        with a popularity blend, the ``popular_pool`` most popular unseen items not among them."""
        pool = int(self.pool or 0)
        n = cosine.shape[1]
        keep = np.zeros_like(scores, dtype=bool)
        for row, user in enumerate(users):
            seen = np.zeros(n, dtype=bool)
            seen[self.seen.indices[self.seen.indptr[user] : self.seen.indptr[user + 1]]] = True
            valid = self.mask & ~seen
            if self.candidates is not None:
                # A filter on the query (e.g. only new items): the pools are drawn within it.
                valid &= self.candidates
            candidates = np.flatnonzero(valid)
            if candidates.size > pool:
                nearest = np.argpartition(-cosine[row, candidates], pool - 1)[:pool]
                candidates = candidates[nearest]
            keep[row, candidates] = True
            if self.popularity and self.popular_pool:
                order = self.popular_order
                extra = order[valid[order] & ~keep[row, order]][: self.popular_pool]
                keep[row, extra[self.mask[extra]]] = True
        return np.where(keep, scores, -1e9)


def popularity_counts(train: InteractionLog) -> np.ndarray:
    """Distinct users with a positive training interaction, per item."""
    positive = train.subset(train.weights > 0)
    return np.asarray(positive.matrix(binary=True).sum(axis=0), dtype=np.float64).ravel()


def user_profiles(
    train: InteractionLog,
    matrix: np.ndarray,
    mask: np.ndarray,
    *,
    last: int | None = None,
    half_life_days: float | None = None,
    uniform: bool = False,
) -> np.ndarray:
    """Unit profile vector per user from their training interactions only, as
    :func:`embrec.interactions.interaction_weights` builds it from the database.

    ``last``: only the user's ``last`` most recently touched *distinct* items count (ordered by
    their latest interaction, ties by item key); every interaction with them is used.
    ``half_life_days``: weights decay by ``0.5 ** (age / half_life)``, age measured from the
    user's latest counted interaction. ``uniform``: positive interactions weigh 1, negative ones
    0 (``USER_VECTOR_WEIGHTING = "uniform"``). Items lacking a vector are then skipped.
    """
    order = train.chronological_order()
    users = train.user_index[order].astype(np.int64)
    items = train.item_index[order].astype(np.int64)
    times = train.timestamps[order]
    weights = train.weights[order].astype(np.float64)
    if last:
        n_items = max(train.n_items, 1)
        pair = users * n_items + items
        uniq, inverse = np.unique(pair, return_inverse=True)
        latest = np.full(uniq.shape[0], -np.inf)
        np.maximum.at(latest, inverse, times)
        pair_user, pair_item = uniq // n_items, uniq % n_items
        rank = _key_rank(train.items)
        by_recency = np.lexsort((rank[pair_item], latest, pair_user))
        sorted_users = pair_user[by_recency]
        ends = np.cumsum(np.bincount(sorted_users, minlength=train.n_users))
        from_end = ends[sorted_users] - np.arange(sorted_users.shape[0]) - 1
        chosen = np.zeros(uniq.shape[0], dtype=bool)
        chosen[by_recency[from_end < last]] = True
        recent = chosen[inverse]
        users, items, times, weights = users[recent], items[recent], times[recent], weights[recent]
    if uniform:
        weights = (weights > 0).astype(np.float64)
    if half_life_days:
        reference = np.full(train.n_users, -np.inf)
        np.maximum.at(reference, users, times)
        age_days = (reference[users] - times) / 86400.0
        weights = weights * half_life_decay(age_days, half_life_days)
    keep = mask[items]
    users, items, weights = users[keep], items[keep], weights[keep]
    profiles = np.zeros((train.n_users, matrix.shape[1]), dtype=np.float64)
    np.add.at(profiles, users, weights[:, None] * matrix[items])
    # Like the read path: a user with no positive contribution has no vector.
    n_items = max(train.n_items, 1)
    pairs, inverse = np.unique(users * n_items + items, return_inverse=True)
    summed = np.zeros(pairs.shape[0], dtype=np.float64)
    np.add.at(summed, inverse, weights)
    positive = np.zeros(train.n_users, dtype=bool)
    positive[(pairs[summed > 0] // n_items).astype(np.int64)] = True
    profiles[~positive] = 0.0
    return l2_normalize(profiles.astype(np.float32))


class CachedItemVectors(ItemVectors):
    """Computes another source's vectors once per split (a validation search tries many profile
    options on the same vectors; item2vec is trained once per split, not once per option).

    Other attributes (e.g. ALS's ``fold_in_profiles``) are the source's, with the source's
    fitted state (``fitted``) of the split last asked for restored on a cache hit."""

    def __init__(self, source: ItemVectors):
        self.source = source
        self.name = source.name
        self._computed: list[tuple[Split, tuple[np.ndarray, np.ndarray], object]] = []

    def vectors(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        for seen, result, fitted in self._computed:
            if seen is split:
                if fitted is not None:
                    self.source.fitted = fitted
                return result
        result = self.source.vectors(split)
        self._computed.append((split, result, getattr(self.source, "fitted", None)))
        return result

    def __getattr__(self, name: str):
        if name.startswith("_") or name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)


def cached_source(source: ItemVectors) -> ItemVectors:
    """``source`` with each leaf cached per split; a hybrid keeps its structure so its part
    weights can still be changed cheaply."""
    if isinstance(source, HybridItemVectors):
        return HybridItemVectors(
            [cached_source(p) for p in source.parts], source.weights, source.mode, source.name
        )
    return CachedItemVectors(source)


# --------------------------------------------------------------------------- trained encoders


def training_histories(train: InteractionLog, min_weight: float = 0.0) -> list[list[tuple]]:
    """Each training user's ``(item key, weight)`` pairs in time order, interactions with weight
    above ``min_weight`` only: what a trained encoder reads from the ``Interaction`` table."""
    behaviour = train.subset(train.weights > min_weight)
    order = behaviour.chronological_order()
    histories: list[list[tuple]] = [[] for _ in range(train.n_users)]
    for pos in order:
        histories[behaviour.user_index[pos]].append(
            (train.items[behaviour.item_index[pos]], float(behaviour.weights[pos]))
        )
    return histories


def item_support(train: InteractionLog, min_weight: float = 0.0) -> np.ndarray:
    """Distinct training users with an interaction above ``min_weight``, per item."""
    behaviour = train.subset(train.weights > min_weight)
    return np.asarray(behaviour.matrix(binary=True).sum(axis=0), dtype=np.float64).ravel()


class TrainedItemVectors(ItemVectors):
    """Any :class:`~embrec.encoders.trained.TrainedEncoder` (item2vec, ALS) trained on the
    training interactions of the split, vectors as the encoder stores them."""

    def __init__(self, encoder, name: str | None = None):
        self.encoder = encoder
        self.name = name or encoder.alias
        self.fitted: Any = None

    def vectors(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        train = split.train
        min_weight = float(self.encoder.options.get("min_weight", 0.0))
        self.fitted = self.encoder.fit_model(training_histories(train, min_weight))
        self.position = {key: n for n, key in enumerate(train.items)}
        matrix = np.zeros((train.n_items, self.fitted.vectors.shape[1]), dtype=np.float32)
        mask = np.zeros(train.n_items, dtype=bool)
        for token, vector in zip(self.fitted.tokens, self.fitted.vectors, strict=True):
            row = self.position[token]
            matrix[row] = vector
            mask[row] = True
        return matrix, mask


class ALSItemVectors(TrainedItemVectors):
    """The ALS encoder as the read path uses it: stored item vectors, and each user's vector
    folded in from *all* their training items (:meth:`fold_in_profiles`, which
    :class:`EmbeddingMethod` calls instead of averaging item vectors)."""

    def fold_in_profiles(self, train: InteractionLog) -> np.ndarray:

        fitted = self.fitted
        factors = fitted.arrays["factors"]
        gram = fitted.arrays["gram"]
        row_of = {token: n for n, token in enumerate(fitted.tokens)}
        params = self.encoder.params
        binary = params["confidence"] == "binary"
        min_weight = float(self.encoder.options.get("min_weight", 0.0))
        dims = fitted.vectors.shape[1]
        profiles = np.zeros((train.n_users, dims), dtype=np.float32)
        for user, history in enumerate(training_histories(train, min_weight)):
            values: dict[str, float] = {}
            for key, weight in history:
                values[key] = values.get(key, 0.0) + weight
            known = [k for k in values if k in row_of]
            if not known:
                continue
            factor = fold_in(
                factors,
                gram,
                [row_of[k] for k in known],
                [1.0 if binary else values[k] for k in known],
                float(params["regularization"]),
                float(params["alpha"]),
            )
            vector = self.encoder.user_vector_from_factor(factor)
            if vector is not None:
                profiles[user] = vector
        return profiles


class AdaptiveItemVectors(ItemVectors):
    """:class:`~embrec.encoders.adaptive.AdaptiveHybridEncoder` on a split: the behavioural
    source trained on the training interactions, the content map fitted on training items with
    at least ``fit_support`` users, blended by each item's training support."""

    def __init__(
        self,
        behaviour: ItemVectors,
        content: ItemVectors,
        *,
        shrinkage: float = 20.0,
        min_support: float = 5,
        fit_support: float = 20,
        ridge: float = 1.0,
        center: bool = False,
        rescale: bool = True,
        uncertainty: float = 0.0,
        min_weight: float = 0.0,
        name: str = "adaptive",
    ):
        self.uncertainty = uncertainty
        self.center = center
        self.rescale = rescale
        self.behaviour = behaviour
        self.content = content
        self.shrinkage = shrinkage
        self.min_support = min_support
        self.fit_support = fit_support
        self.ridge = ridge
        self.min_weight = min_weight
        self.name = name

    def vectors(self, split: Split) -> tuple[np.ndarray, np.ndarray]:

        own, has_own = self.behaviour.vectors(split)
        content, has_content = self.content.vectors(split)
        support = item_support(split.train, self.min_weight)
        fit_rows = has_own & has_content & (support >= max(self.fit_support, 1))
        if not fit_rows.any():
            fit_rows = has_own & has_content
        mean = own[has_own].mean(axis=0) if self.center else None
        content_map = fit_map(
            content[fit_rows], own[fit_rows], ridge=self.ridge, center=mean, rescale=self.rescale
        )
        mapped = content_map.apply(np.where(has_content[:, None], content, 0.0))
        return blend(
            own,
            has_own,
            mapped,
            support,
            shrinkage=self.shrinkage,
            min_support=self.min_support,
            mean=mean,
            uncertainty=self.uncertainty,
            keys=split.train.items,
        )


class FinetunedItemVectors(ItemVectors):
    """A text encoder fine-tuned on the split's *training* interactions only.

    Co-consumed pairs are mined from the training interactions (positive ones, each user's items
    in time order) with the encoder's parameters, the encoder's *base* model is fine-tuned on
    their texts in memory (nothing is stored, the site's current fine-tune is never used), and
    every catalog item with a text is encoded with it, held-out items included: like a new item
    on the site, they get a vector from their text alone.

    ``texts`` maps the split's item keys to texts (``None``: no text, no vector). ``params``
    override the encoder's training parameters (validation searches). After :meth:`vectors`,
    ``stats`` holds the :class:`~embrec.encoders.finetune.FitStats` of the run.
    """

    def __init__(
        self,
        encoder,
        texts: Callable[[Sequence[str]], Sequence[str | None]],
        *,
        params: dict | None = None,
        name: str = "finetuned",
    ):
        self.encoder = encoder
        self.texts = texts
        self.params = dict(params or {})
        self.name = name
        self.stats = None
        self._cached: tuple | None = None

    def vectors(self, split: Split) -> tuple[np.ndarray, np.ndarray]:

        train = split.train
        if self._cached is not None and self._cached[0] is train:
            return self._cached[1]
        p = validate_params({**self.encoder.params, **self.params})
        min_weight = float(self.encoder.options.get("min_weight", 0.0))
        behaviour = train.subset(train.weights > min_weight)
        texts = list(self.texts(train.items))
        mined = mine_pairs(
            ([train.items[i] for i in seq] for seq in behaviour.sequences()),
            window=p["window"],
            max_pairs=p["max_pairs"],
            max_pairs_per_item=p["max_pairs_per_item"],
            min_count=p["min_count"],
        )
        position = {key: n for n, key in enumerate(train.items)}
        pairs = [
            (texts[position[a]], texts[position[b]])
            for a, b, _ in mined
            if texts[position[a]] and texts[position[b]]
        ]
        model, self.stats = finetune_texts(
            self.encoder.base_model,
            cast("list[tuple[str, str]]", pairs),  # texts of both items are set (filtered above)
            p,
            device=self.encoder.train_device,
        )
        rows = [n for n, text in enumerate(texts) if text]
        encoded = model.encode(
            [texts[n] for n in rows],
            batch_size=256,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        matrix = np.zeros((train.n_items, encoded.shape[1]), dtype=np.float32)
        mask = np.zeros(train.n_items, dtype=bool)
        matrix[rows] = encoded
        mask[rows] = True
        self._cached = (train, (matrix, mask))
        return matrix, mask
