"""Co-occurrence: item vectors whose cosine is item-kNN's, compressed by a truncated SVD.

Item-kNN, the baseline that is hard to beat for "people who liked this also liked", ranks the
neighbours of item ``i`` by the cosine of the columns of the binary user × item matrix ``X``:
``cos(i, j) = |U_i ∩ U_j| / √(|U_i| |U_j|)`` (``U_i`` the users with a positive interaction with
``i``). That is the Gram matrix ``X̂ᵀX̂`` of the column-normalised matrix ``X̂``. This encoder
factorises ``X̂ᵀ`` (items × users) by a truncated SVD, ``X̂ᵀ ≈ U_d S_d V_dᵀ``, and stores the
unit rows of ``U_d S_d`` as item vectors. Their inner products are the best rank-``d``
approximation of the item-kNN cosine matrix (Eckart–Young); when ``d`` reaches the rank of ``X``
(a small catalog or few users) the stored cosines *are* item-kNN's, and pgvector's nearest
neighbours are item-kNN's similar list. This is the explicit-factorisation view of co-occurrence
embeddings (Levy & Goldberg, "Neural word embedding as implicit matrix factorization", NIPS 2014)
with the normalisation item-kNN uses instead of PMI, which on MovieLens lists obscure co-rated
titles (docs/ENCODERS.md).

The truncation also helps: on the MovieLens validation split 128 dimensions match item-kNN's
next-item hit rate with fewer hubs.

Items nobody interacted with get no vector: wrap the encoder in an
:class:`~embrec.encoders.adaptive.AdaptiveHybridEncoder` with a text encoder to cover new and
rarely-seen items. User vectors are the usual mean of item vectors (``USER_VECTOR_*`` settings).

Options (all optional):

* ``dimensions`` (128) — kept singular directions; vectors are zero-padded to this size when the
  data has lower rank;
* ``model_dir``, ``kinds``, ``min_weight`` — as for every trained encoder
  (:mod:`embrec.encoders.trained`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from django.core.exceptions import ImproperlyConfigured
from scipy import sparse

from embrec.encoders.als import interaction_matrix
from embrec.encoders.trained import FittedModel, History, TrainedEncoder
from embrec.vectors import l2_normalize

DEFAULT_PARAMS: dict[str, Any] = {"dimensions": 128, "seed": 1}

#: Above this many matrix cells the SVD is computed sparsely (ARPACK) instead of densely.
DENSE_LIMIT = 50_000_000


def normalized_columns(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    """``matrix`` (users × items, binary) with every non-empty column scaled to unit length."""
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0), dtype=np.float64)).ravel()
    norms[norms == 0] = 1.0
    return sparse.csr_matrix(matrix @ sparse.diags(1.0 / norms))


def cooccurrence_vectors(matrix: sparse.csr_matrix, dimensions: int, seed: int = 1) -> np.ndarray:
    """Unit item vectors (items × ``dimensions``) whose inner products approximate the cosine of
    ``matrix``'s columns: the rows of ``U_d S_d`` of the truncated SVD of the column-normalised
    matrix, transposed (exact when ``dimensions`` reaches its rank)."""
    items = normalized_columns(matrix).T.tocsr().astype(np.float64)  # items × users
    n_items, n_users = items.shape
    rank = min(n_items, n_users)
    keep = min(int(dimensions), rank)
    if n_items * n_users <= DENSE_LIMIT or keep >= rank:
        u, s, _ = np.linalg.svd(items.toarray(), full_matrices=False)
        u, s = u[:, :keep], s[:keep]
    else:
        from scipy.sparse.linalg import svds

        rng = np.random.default_rng(int(seed))
        u, s, _ = svds(items, k=keep, v0=rng.standard_normal(rank))
    vectors = np.zeros((n_items, int(dimensions)), dtype=np.float64)
    vectors[:, : len(s)] = u * s
    return l2_normalize(vectors)


class CooccurrenceEncoder(TrainedEncoder):
    """Item-kNN's cosine as item vectors (truncated SVD; see the module docstring)."""

    identity_name = "cooc"
    defaults = DEFAULT_PARAMS

    def __init__(self, alias: str, **options):
        super().__init__(alias, **options)
        try:
            dims = int(self.params["dimensions"])
        except (TypeError, ValueError):
            dims = 0
        if dims < 1:
            raise ImproperlyConfigured(
                f"EMBREC['ENCODERS'][{alias!r}]: dimensions must be a positive integer."
            )

    def untrained_dimensions(self) -> int:
        return int(self.params["dimensions"])

    def fit_model(self, histories: Sequence[History]) -> FittedModel:
        matrix, tokens = interaction_matrix(histories, "binary")
        if matrix.nnz == 0:
            raise ValueError("The co-occurrence encoder needs at least one positive interaction.")
        vectors = cooccurrence_vectors(
            matrix, int(self.params["dimensions"]), int(self.params["seed"])
        )
        support = np.asarray((matrix > 0).sum(axis=0), dtype=np.float32).ravel()
        return FittedModel(tokens, vectors, support, meta={"users": int(matrix.shape[0])})
