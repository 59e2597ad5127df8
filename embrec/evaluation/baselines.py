"""Reference recommenders every embrec configuration is compared with.

Each is a :class:`Method`: ``fit(split)`` learns from the training interactions only and
``score(users)`` returns a ``(len(users), n_items)`` score matrix (higher is better). Items the
user already has in training are excluded by the evaluator, not by the methods.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from embrec.evaluation.split import Split


class Method:
    """A recommender under evaluation.

    Override :meth:`fit` (learn from ``split.train``; never look at the held-out items) and
    :meth:`score`. ``name`` labels the method in reports.
    """

    name: str = "method"
    #: Short description shown in reports.
    description: str = ""

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
