"""item2vec: behavioural item vectors learned from users' interaction sequences.

word2vec (skip-gram with negative sampling, from ``gensim``) trained on each user's items in time
order: items consumed by the same users, close in time, get close vectors. It does not read item
text (``uses_text = False``); items nobody interacted with get no vector under this encoder (the
write path stores no row for them), so pair it with a text encoder in a
:class:`~embrec.encoders.hybrid.HybridEncoder` to cover new items.

Training is explicit: run the ``embrec.train_item2vec`` Celery task (on a beat schedule or on
demand) or ``manage.py embrec_train``. The model is saved under ``OPTIONS["model_dir"]/<alias>/``;
its revision is a fingerprint of the training data and parameters, so retraining changes the
encoder's identity and marks every stored vector of this alias stale.

Options (all optional):

* ``vector_size`` (64), ``window`` (5), ``negative`` (10), ``epochs`` (10), ``sg`` (1: skip-gram),
  ``min_count`` (1: items with fewer interactions get no vector), ``sample`` (0: no down-sampling
  of popular items), ``ns_exponent`` (0.75), ``alpha`` (0.025), ``seed`` (1), ``workers`` (1; more
  threads train faster but not bit-for-bit reproducibly) — word2vec parameters. Values tuned on
  MovieLens (Caselles-Dupré et al., RecSys 2018): ``ns_exponent=-0.5, window=50, epochs=20,
  sample=1e-4, min_count=5, center=True`` (docs/ENCODERS.md).
* ``center`` (False) — subtract the mean vector before normalising: removes the direction all
  items share, which makes a few items the nearest neighbour of many.

Rarely-seen items: wrap the encoder in an :class:`~embrec.encoders.adaptive.AdaptiveHybridEncoder`
with a text encoder; items below ``min_count`` then get their content mapped into the item2vec
space, and items with little support are shrunk towards it.
* ``model_dir``, ``kinds``, ``min_weight`` — as for every trained encoder
  (:mod:`embrec.encoders.trained`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from django.core.exceptions import ImproperlyConfigured

from embrec.encoders.trained import (
    UNTRAINED,
    FittedModel,
    History,
    TrainedEncoder,
    TrainingResult,
    dependent_aliases,
    item_token,
    split_history,
    support_counts,
)
from embrec.vectors import l2_normalize

__all__ = [
    "DEFAULT_PARAMS",
    "UNTRAINED",
    "Item2VecEncoder",
    "TrainingResult",
    "dependent_aliases",
    "item_token",
    "train_keyed_vectors",
]

DEFAULT_PARAMS: dict[str, Any] = {
    "vector_size": 64,
    "window": 5,
    "negative": 10,
    "epochs": 10,
    "sg": 1,
    "min_count": 1,
    "sample": 0.0,
    "ns_exponent": 0.75,
    "alpha": 0.025,
    "seed": 1,
    "workers": 1,
    "center": False,
}


def _stable_hash(value: str) -> int:
    # gensim seeds each vector with hashfxn(word + seed); Python's str hash is randomised per
    # process, which would make training irreproducible.
    return zlib.crc32(str(value).encode("utf-8"))


def train_keyed_vectors(sequences: Sequence[Sequence[str]], params: dict[str, Any]):
    """Train word2vec on ``sequences`` of item tokens; returns gensim ``KeyedVectors``.

    Sequences with fewer than two items carry no co-occurrence and are left out. Raises
    ``ValueError`` when nothing is left to learn from.
    """
    try:
        from gensim.models import Word2Vec
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImproperlyConfigured(
            "The item2vec encoder needs gensim: pip install 'embrec[evaluate]'."
        ) from exc
    sentences = [list(map(str, s)) for s in sequences if len(s) > 1]
    if not sentences:
        raise ValueError("item2vec needs at least one user with two or more interactions.")
    p = {**DEFAULT_PARAMS, **params}
    model = Word2Vec(
        sentences=sentences,
        vector_size=int(p["vector_size"]),
        window=int(p["window"]),
        negative=int(p["negative"]),
        epochs=int(p["epochs"]),
        sg=int(p["sg"]),
        min_count=int(p["min_count"]),
        sample=float(p["sample"]),
        ns_exponent=float(p["ns_exponent"]),
        alpha=float(p["alpha"]),
        seed=int(p["seed"]),
        workers=int(p["workers"]),
        hashfxn=_stable_hash,
    )
    return model.wv


class Item2VecEncoder(TrainedEncoder):
    """Item vectors from interaction sequences (see the module docstring for options)."""

    identity_name = "item2vec"
    defaults = DEFAULT_PARAMS

    def untrained_dimensions(self) -> int:
        return int(self.params["vector_size"])

    def fit(self, sequences: Sequence[History]) -> tuple[list[str], np.ndarray]:
        """Train on ``sequences`` of item tokens in memory; returns ``(tokens, unit vectors)``.

        Nothing is stored: evaluation uses this to train on the training split only.
        """
        fitted = self.fit_model(sequences)
        return fitted.tokens, fitted.vectors

    def fit_model(self, histories: Sequence[History]) -> FittedModel:
        sequences = [split_history(h)[0] for h in histories]
        wv = train_keyed_vectors(sequences, self.params)
        vectors = np.asarray(wv.vectors, dtype=np.float32)
        if self.params["center"]:
            # Subtracting the mean vector removes the direction every item shares, which is what
            # makes a few items (hubs) the nearest neighbour of many others.
            vectors = vectors - vectors.mean(axis=0, keepdims=True)
        tokens = [str(k) for k in wv.index_to_key]
        counts = support_counts(sequences)
        support = np.array([counts.get(t, 0) for t in tokens], dtype=np.float32)
        return FittedModel(tokens, l2_normalize(vectors), support)

    def sequences_from_database(
        self, content_type_ids: Iterable[int] | None = None
    ) -> tuple[list[list[str]], int]:
        """Each user's item tokens in time order, read from the ``Interaction`` table."""
        histories, count = self.histories_from_database(content_type_ids)
        return [split_history(h)[0] for h in histories], count
