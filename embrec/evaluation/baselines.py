"""Reference recommenders every embrec configuration is compared with.

Each is a :class:`Method`: ``fit(split)`` learns from the training interactions only and
``score(users)`` returns a ``(len(users), n_items)`` score matrix (higher is better). Items the
user already has in training are excluded by the evaluator, not by the methods.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import sparse

from embrec.evaluation.split import Split, _key_rank


class Method:
    """A recommender under evaluation.

    Override :meth:`fit` (learn from ``split.train``; never look at the held-out items) and
    :meth:`score`. ``name`` labels the method in reports.
    """

    name: str = "method"
    #: Short description shown in reports.
    description: str = ""
    #: Boolean mask of the items that may be recommended, set by the evaluator before
    #: :meth:`score` (None: the whole catalog). Most methods ignore it (the evaluator excludes
    #: the others); a method whose candidate pool depends on it (embrec's read path) uses it.
    candidates: np.ndarray | None = None

    def fit(self, split: Split) -> None:
        raise NotImplementedError

    def score(self, users: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class RandomMethod(Method):
    """Uniformly random scores (seeded): the floor any recommender must clear."""

    def __init__(self, name: str = "random", seed: int = 0):
        self.name = name
        self.seed = seed
        self.description = "uniform random ranking"

    def fit(self, split: Split) -> None:
        self.n_items = split.train.n_items
        self.rng = np.random.default_rng(self.seed)

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.rng.random((len(users), self.n_items))


class PopularityMethod(Method):
    """Items ranked by how many training users interacted with them."""

    def __init__(self, name: str = "popularity"):
        self.name = name
        self.description = "most interacted items (training users)"

    def fit(self, split: Split) -> None:
        counts = np.asarray(split.train.matrix(binary=True).sum(axis=0)).ravel()
        self.counts = counts.astype(np.float64)

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), self.counts.shape[0]))


class ItemKNNMethod(Method):
    """Item-based collaborative filtering: cosine similarity between item columns of the binary
    user × item matrix, each item keeping its ``neighbors`` most similar items; a user's score for
    an item is the sum of its similarities to the user's training items."""

    def __init__(self, name: str = "item-knn", neighbors: int = 100, shrink: float = 0.0):
        self.name = name
        self.neighbors = neighbors
        self.shrink = shrink
        self.description = f"item-kNN, cosine, {neighbors} neighbours"

    def fit(self, split: Split) -> None:
        x = split.train.matrix(binary=True).astype(np.float64)
        self.user_items = x.tocsr()
        xt = x.T.tocsr()
        n = xt.shape[0]
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
        keep = self.neighbors if self.neighbors and self.neighbors < n else None
        # Item-item similarities block by block: memory stays ~block × n_items for any catalog.
        block = max(1, min(n, 20_000_000 // max(n, 1)))
        rows, cols, vals = [], [], []
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            co = (xt[lo:hi] @ x).toarray()
            denom = np.outer(norms[lo:hi], norms) + self.shrink
            denom[denom == 0] = 1.0
            sim = co / denom
            sim[np.arange(hi - lo), np.arange(lo, hi)] = 0.0
            if keep is not None:
                cut = np.argpartition(-sim, keep, axis=1)[:, keep:]
                np.put_along_axis(sim, cut, 0.0, axis=1)
            r, c = np.nonzero(sim)
            rows.append(r + lo)
            cols.append(c)
            vals.append(sim[r, c])
        self.similarity = sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
        )

    def score(self, users: np.ndarray) -> np.ndarray:
        return (self.user_items[users] @ self.similarity).toarray()


class ALSMethod(Method):
    """Implicit-feedback matrix factorisation (Hu, Koren & Volinsky) from the ``implicit`` package."""

    def __init__(
        self,
        name: str = "als",
        factors: int = 32,
        regularization: float = 0.1,
        iterations: int = 20,
        alpha: float = 1.0,
        seed: int = 0,
    ):
        self.name = name
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha
        self.seed = seed
        self.description = f"implicit ALS, {factors} factors, reg {regularization}"

    def fit(self, split: Split) -> None:
        try:
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "The ALS baseline needs the 'implicit' package: pip install 'embrec[evaluate]'."
            ) from exc
        from threadpoolctl import threadpool_limits

        # implicit wants single-threaded BLAS (it parallelises itself); 1 thread keeps results
        # reproducible.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                iterations=self.iterations,
                alpha=self.alpha,
                random_state=self.seed,
                num_threads=1,
            )
            model.fit(split.train.matrix(binary=True), show_progress=False)
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors[users] @ self.item_factors.T


class RecentItemKNNMethod(ItemKNNMethod):
    """Item-kNN scored from the user's ``recent`` most recent distinct training items only
    ("next to what they just watched"): the strong session-style baseline."""

    def __init__(
        self,
        name: str = "recent-knn",
        neighbors: int = 100,
        shrink: float = 0.0,
        recent: int = 3,
    ):
        super().__init__(name=name, neighbors=neighbors, shrink=shrink)
        if recent < 1:
            raise ValueError("recent must be at least 1")
        self.recent = recent
        self.description = f"item-kNN from the {recent} latest items, {neighbors} neighbours"

    def fit(self, split: Split) -> None:
        super().fit(split)
        self.user_items = recent_items_matrix(split.train, self.recent)


def recent_items_matrix(train, recent: int) -> sparse.csr_matrix:
    """Binary users × items matrix of each user's ``recent`` most recently *first* consumed
    distinct items (ties by item key, as in the splits)."""

    n_items = max(train.n_items, 1)
    pair = train.user_index.astype(np.int64) * n_items + train.item_index
    uniq, inverse = np.unique(pair, return_inverse=True)
    first = np.full(uniq.shape[0], np.inf)
    np.minimum.at(first, inverse, train.timestamps)
    users, items = uniq // n_items, uniq % n_items
    order = np.lexsort((_key_rank(train.items)[items], first, users))
    ends = np.cumsum(np.bincount(users[order], minlength=train.n_users))
    from_end = ends[users[order]] - np.arange(order.shape[0]) - 1
    keep = order[from_end < recent]
    return sparse.csr_matrix(
        (np.ones(keep.shape[0], dtype=np.float64), (users[keep], items[keep])),
        shape=(train.n_users, train.n_items),
    )


class EASEMethod(Method):
    """EASE (Steck, WWW 2019): a closed-form item-item linear model.

    ``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹`` over the binary training matrix ``X``
    (zero diagonal); a user's scores are ``x_u B``. Dense ``n_items²``: fine to a few 10k items.
    """

    def __init__(self, name: str = "ease", regularization: float = 500.0):
        self.name = name
        self.regularization = regularization
        self.description = f"EASE, lambda {regularization:g}"

    def fit(self, split: Split) -> None:
        x = split.train.matrix(binary=True).astype(np.float64).tocsr()
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += self.regularization
        p = np.linalg.inv(gram)
        b = p / -np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self.user_items = x
        self.weights = b

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.user_items[users] @ self.weights)


# ----------------------------------------------------------------------------- similar items


def similar_scores(method: Method, sources: np.ndarray) -> np.ndarray | None:
    """Item-to-item scores ``(len(sources), n_items)`` of a fitted method, or None when the
    method has no notion of similar items.

    Item-kNN: its (pruned) similarity rows; EASE: rows of ``B``; ALS: cosine of item factors;
    popularity: the popularity order; embrec methods: cosine of their item vectors (what
    ``embrec.similar`` returns).
    """
    if isinstance(method, ItemKNNMethod):
        return method.similarity[sources].toarray()
    if isinstance(method, EASEMethod):
        return method.weights[sources]
    if isinstance(method, ALSMethod):
        f = method.item_factors
        norms = np.linalg.norm(f, axis=1)
        norms[norms == 0] = 1.0
        unit = f / norms[:, None]
        return unit[sources] @ unit.T
    if isinstance(method, PopularityMethod):
        return np.broadcast_to(method.counts, (len(sources), method.counts.shape[0])).copy()
    items = getattr(method, "items", None)
    mask = getattr(method, "mask", None)
    if items is not None and mask is not None:
        scores = np.asarray(items[sources] @ items.T, dtype=np.float64)
        scores[:, ~mask] = -np.inf
        scores[~mask[sources]] = -np.inf
        return scores
    return None


# ----------------------------------------------------------------------------- search spaces

#: Parameter grids searched on validation, per baseline name. Every method (embrec's too) gets at
#: most :data:`SEARCH_BUDGET` configurations: a larger grid is sampled, seeded.
GRIDS: dict[str, dict[str, list]] = {
    "random": {},
    "popularity": {},
    "item-knn": {"neighbors": [20, 50, 100, 200, 400], "shrink": [0.0, 10.0, 50.0]},
    "recent-knn": {"neighbors": [50, 100, 200, 400], "recent": [1, 2, 3, 5, 10, 20]},
    "ease": {"regularization": [10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0]},
    "als": {
        "factors": [32, 64, 128],
        "regularization": [0.01, 0.1, 1.0],
        "iterations": [10, 25],
    },
}

#: Most configurations any method may try on validation (a comparable search budget).
SEARCH_BUDGET = 24

BASELINE_CLASSES: dict[str, type[Method]] = {
    "random": RandomMethod,
    "popularity": PopularityMethod,
    "item-knn": ItemKNNMethod,
    "recent-knn": RecentItemKNNMethod,
    "ease": EASEMethod,
    "als": ALSMethod,
}


def expand_grid(grid: dict[str, list], budget: int = SEARCH_BUDGET, seed: int = 0) -> list[dict]:
    """All combinations of ``grid`` (in order), or ``budget`` of them sampled without
    replacement (seeded) when there are more."""
    keys = list(grid)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]
    if len(combos) <= budget:
        return combos
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(combos), size=budget, replace=False).tolist())
    return [combos[i] for i in picked]
