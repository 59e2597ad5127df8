"""ALS: matrix-factorisation item vectors, with user vectors folded in from the same model.

Implicit-feedback alternating least squares (Hu, Koren & Volinsky 2008, the ``implicit``
package) factorises the user × item matrix of positive interactions into item factors ``y_i`` and
user factors ``x_u``; ALS ranks items for a user by the dot product ``x_u · y_i``. This encoder
stores the item factors as item vectors and computes a user's vector by *folding in*: solving the
same least-squares problem ALS solves for a user, ``x_u = (YᵀY + Yᵀ(C_u − I)Y + λI)⁻¹ YᵀC_u p_u``,
from that user's current interactions (all of them, not only the most recent few). A user who
rated a movie a minute ago gets a new vector without retraining, and the result is what
``implicit``'s own ``recommend(..., recalculate_user=True)`` would rank.

pgvector ranks by cosine (``<=>``), not by dot product. With ``similarity = "exact"`` (default)
the stored vectors are the standard maximum-inner-product → cosine reduction (Bachrach et al.,
RecSys 2014): each item vector is ``[y_i / M, √(1 − |y_i|²/M²)]`` (``M`` the largest item norm),
a unit vector, and a user's is ``[x_u / |x_u|, 0]``; their cosine is ``x_u · y_i / (|x_u| M)``,
so the personal ranking pgvector returns *is* ALS's ranking, by construction. Similar items then
rank by ``y_i · y_j`` plus a term that favours items of similar (small) norm. With
``similarity = "cosine"`` the stored vectors are the unit item factors: similar items by plain
factor cosine, and personal recommendations by the cosine of the folded-in user vector (ALS's
scores divided by each item's norm: less popularity, not exactly ALS). docs/ENCODERS.md compares
the two on MovieLens.

Items nobody interacted with get no vector: pair the encoder with a text encoder in an
:class:`~embrec.encoders.adaptive.AdaptiveHybridEncoder` to cover them.

Training is explicit, like item2vec's: ``manage.py embrec_train`` or the
``embrec.train_item2vec`` Celery task (it trains any trained encoder).

Options (all optional):

* ``factors`` (64), ``regularization`` (0.05), ``iterations`` (15), ``alpha`` (1.0: confidence
  ``c = 1 + alpha·value``), ``seed`` (1), ``threads`` (1) — ALS parameters;
* ``confidence`` — ``"binary"`` (default: every positive interaction counts 1) or ``"weight"``
  (the summed weights of the user's positive interactions with the item);
* ``similarity`` — ``"exact"`` (default) or ``"cosine"``, see above;
* ``model_dir``, ``kinds``, ``min_weight`` — as for every trained encoder
  (:mod:`embrec.encoders.trained`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from django.core.exceptions import ImproperlyConfigured
from scipy import sparse

from embrec.encoders.trained import (
    FittedModel,
    History,
    TrainedEncoder,
    item_token,
    split_history,
)
from embrec.models import content_type_of
from embrec.vectors import l2_normalize, unit_vector

DEFAULT_PARAMS: dict[str, Any] = {
    "factors": 64,
    "regularization": 0.05,
    "iterations": 15,
    "alpha": 1.0,
    "seed": 1,
    "threads": 1,
    "confidence": "binary",
    "similarity": "exact",
}

CONFIDENCES = ("binary", "weight")
SIMILARITIES = ("exact", "cosine")


def interaction_matrix(
    histories: Sequence[History], confidence: str = "binary"
) -> tuple[sparse.csr_matrix, list[str]]:
    """``(users × items CSR of values, item tokens)`` from histories of positive interactions."""
    tokens: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for user, history in enumerate(histories):
        names, weights = split_history(history)
        for token, weight in zip(names, weights, strict=True):
            if weight <= 0:
                continue
            col = tokens.setdefault(token, len(tokens))
            rows.append(user)
            cols.append(col)
            vals.append(weight if confidence == "weight" else 1.0)
    matrix = sparse.csr_matrix(
        (np.asarray(vals, dtype=np.float32), (rows, cols)),
        shape=(len(histories), len(tokens)),
        dtype=np.float32,
    )
    if confidence == "binary":
        matrix.data[:] = 1.0  # duplicates summed by the constructor count once
    return matrix, list(tokens)


def train_factors(matrix: sparse.csr_matrix, params: Mapping[str, Any]):
    """Fit implicit's ALS on ``matrix`` (users × items); returns the fitted model."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImproperlyConfigured(
            "The ALS encoder needs the 'implicit' package: pip install 'embrec[evaluate]'."
        ) from exc
    # implicit parallelises itself and wants single-threaded BLAS.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=int(params["factors"]),
            regularization=float(params["regularization"]),
            iterations=int(params["iterations"]),
            alpha=float(params["alpha"]),
            random_state=int(params["seed"]),
            num_threads=int(params["threads"]),
        )
        model.fit(matrix, show_progress=False)
    return model


def exact_item_vectors(factors: np.ndarray) -> tuple[np.ndarray, float]:
    """``[y / M, √(1 − |y|²/M²)]`` rows (unit vectors) and ``M``, the largest norm."""
    norms = np.linalg.norm(factors, axis=1)
    top = float(norms.max()) if norms.size else 1.0
    top = top or 1.0
    scaled = factors / top
    extra = np.sqrt(np.clip(1.0 - (norms / top) ** 2, 0.0, None))
    return np.hstack([scaled, extra[:, None]]).astype(np.float32), top


def fold_in(
    factors: np.ndarray,
    gram: np.ndarray,
    rows: Sequence[int],
    values: Sequence[float],
    regularization: float,
    alpha: float,
) -> np.ndarray:
    """ALS's least-squares user factor for interactions with item ``rows`` of strength
    ``values``: ``(YᵀY + λI + Σ (c_i − 1) y_i y_iᵀ)⁻¹ Σ c_i y_i`` with ``c_i = alpha·value``
    (implicit's convention: the stored values are the confidences)."""
    k = factors.shape[1]
    a = gram.astype(np.float64) + float(regularization) * np.eye(k)
    b = np.zeros(k)
    for row, value in zip(rows, values, strict=True):
        c = float(alpha) * float(value)
        y = factors[row].astype(np.float64)
        b += c * y
        a += (c - 1.0) * np.outer(y, y)
    return np.linalg.solve(a, b)


class ALSEncoder(TrainedEncoder):
    """Item factors of implicit ALS as item vectors; users folded in (see the module docstring)."""

    identity_name = "als"
    defaults = DEFAULT_PARAMS
    profile_uses_all_items = True
    folds_in_users = True

    def __init__(self, alias: str, **options):
        super().__init__(alias, **options)
        if self.params["confidence"] not in CONFIDENCES:
            raise ImproperlyConfigured(
                f"EMBREC['ENCODERS'][{alias!r}]: confidence must be one of "
                f"{', '.join(CONFIDENCES)}."
            )
        if self.params["similarity"] not in SIMILARITIES:
            raise ImproperlyConfigured(
                f"EMBREC['ENCODERS'][{alias!r}]: similarity must be one of "
                f"{', '.join(SIMILARITIES)}."
            )

    def untrained_dimensions(self) -> int:
        factors = int(self.params["factors"])
        return factors + 1 if self.params["similarity"] == "exact" else factors

    # -- training ---------------------------------------------------------------------------

    def fit_model(self, histories: Sequence[History]) -> FittedModel:
        matrix, tokens = interaction_matrix(histories, self.params["confidence"])
        if matrix.nnz == 0:
            raise ValueError("ALS needs at least one positive interaction.")
        model = train_factors(matrix, self.params)
        factors = np.asarray(model.item_factors, dtype=np.float32)
        vectors, top = self.item_vectors(factors)
        support = np.asarray((matrix > 0).sum(axis=0), dtype=np.float32).ravel()
        return FittedModel(
            tokens,
            vectors,
            support,
            arrays={"factors": factors, "gram": factors.T.astype(np.float64) @ factors},
            meta={"max_norm": top, "users": int(matrix.shape[0])},
        )

    def item_vectors(self, factors: np.ndarray) -> tuple[np.ndarray, float]:
        """Stored vectors of item ``factors`` and the largest factor norm."""
        if self.params["similarity"] == "exact":
            return exact_item_vectors(factors)
        norms = np.linalg.norm(factors, axis=1)
        top = float(norms.max()) if norms.size else 1.0
        return l2_normalize(factors), top

    def user_vector_from_factor(self, factor: np.ndarray) -> np.ndarray | None:
        """The stored form of a user factor: unit, plus a zero for the extra exact dimension."""
        unit = unit_vector(factor, min_norm=1e-12)
        if unit is None:
            return None
        if self.params["similarity"] == "exact":
            unit = np.append(unit, np.float32(0.0))
        return unit

    def fold_in_tokens(self, values: Mapping[str, float]) -> np.ndarray | None:
        """ALS user factor for ``{item token: value}`` (items the model lacks are skipped)."""
        model = self.model_arrays()
        if model is None:
            return None
        index = model["index"]
        rows, strengths = [], []
        for token, value in values.items():
            row = index.get(token)
            if row is None or value <= 0:
                continue
            rows.append(row)
            strengths.append(1.0 if self.params["confidence"] == "binary" else float(value))
        if not rows:
            return None
        return fold_in(
            model["factors"],
            model["gram"],
            rows,
            strengths,
            float(self.params["regularization"]),
            float(self.params["alpha"]),
        )

    # -- user vectors -----------------------------------------------------------------------

    def fold_in_user(self, rec, weights: Mapping[str, float]) -> np.ndarray | None:
        """A user's vector from ``{object pk: effective weight}`` of their interactions."""
        ct = content_type_of(rec.model)
        factor = self.fold_in_tokens({item_token(ct.id, pk): w for pk, w in weights.items()})
        return None if factor is None else self.user_vector_from_factor(factor)
