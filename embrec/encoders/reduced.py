"""Smaller vectors from another encoder: PCA fitted on the site's own vectors, or truncation.

::

    EMBREC = {"ENCODERS": {
        "default": {"CLASS": "embrec.encoders.sentence_transformer.SentenceTransformerEncoder"},
        "small": {
            "CLASS": "embrec.encoders.reduced.ReducedEncoder",
            "OPTIONS": {"base": "default", "method": "pca", "dimensions": 128},
        },
    }}

Options:

* ``base`` — alias of the encoder whose vectors are reduced (required).
* ``method`` — ``"pca"`` (default): centre on the catalog's mean vector, project on the top
  ``dimensions`` principal directions of the site's own vectors, L2-normalise. ``"truncate"``:
  keep the first ``dimensions`` coordinates and L2-normalise (Matryoshka truncation; only for
  models trained for it, such as ``nomic-embed-text-v1.5`` or ``mxbai-embed-large-v1`` —
  truncating a model that was not loses much more than PCA, see docs/BENCHMARKS.md).
  ``"rotate"``: rotate onto the principal axes of the site's vectors (the eigenvectors of their
  uncentred second moment, largest first) and keep every dimension. A rotation changes no cosine,
  so every answer stays the base's, but the leading dimensions now carry most of the
  information: pair it with the index option ``"index_dimensions"`` (an HNSW index over the
  leading dimensions only, re-ranked by the full vectors; see :mod:`embrec.storage`)::

      "rotated": {
          "CLASS": "embrec.encoders.reduced.ReducedEncoder",
          "OPTIONS": {"base": "default", "method": "rotate",
                      "index": "halfvec", "index_dimensions": 96, "rerank": 200},
      },

  On 100k all-MiniLM-L6-v2 vectors this index was 4.08× smaller than the full ``vector`` index
  at the same recall@10 (0.960 against 0.958 with ``"rerank": 800`` and ``ef_search`` 800) and
  0.79× its latency; at 1M items it kept the recall but was slower (p50 1.16× at 1,000
  candidates; docs/BENCHMARKS.md (g)).
* ``dimensions`` — the dimensions kept (required for ``"pca"`` and ``"truncate"``, fewer than the
  base's; ``"rotate"`` keeps them all and takes none).
* ``fit_sample`` — at most this many vectors for the PCA fit (default 20,000).
* ``model_dir`` — where fits are kept (default ``<BASE_DIR>/.embrec/models/<database>``, then
  ``/<alias>``, as for encoders trained on interactions).

The PCA fit. It reads the base alias's stored vectors of every registration (those written under
the base's current identity, a deterministic sample of ``fit_sample``); where fewer than
``2 × dimensions`` are stored (the base alias is not indexed itself), it encodes the texts of a
sample of the objects of the registrations that use this alias. The fit (mean and components) is
saved as ``pca-<revision>.npz`` with a ``current.json`` pointer; the revision is a digest of the
fitted arrays and of the base's identity, and it is the encoder identity's revision: every vector
records the projection it was made with, query vectors (search, similar to a text) go through the
same projection, and a refit — ``manage.py embrec_fit_reduction ALIAS``, or a changed base
model — is a new identity, whose vectors are recomputed like after any model change. The first
encode fits when no fit exists (under a file lock, so concurrent workers fit once).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from embrec.encoders.base import BaseEncoder, EncoderIdentity
from embrec.encoders.loading import get_encoder
from embrec.encoders.trained import alias_model_dir, atomic_write, registrations_using
from embrec.storage import parse_vector
from embrec.vectors import l2_normalize

logger = logging.getLogger("embrec")

METHODS = ("pca", "truncate", "rotate")
DEFAULT_FIT_SAMPLE = 20_000


def fit_pca(vectors: np.ndarray, dimensions: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``(mean, components, explained)`` of the top ``dimensions`` principal directions.

    ``components`` has shape ``(dimensions, d)``; ``explained`` is the share of the variance
    they keep. Signs are fixed (largest coordinate of each component positive) so that the same
    vectors always give the same fit.
    """
    data = np.asarray(vectors, dtype=np.float64)
    mean = data.mean(axis=0)
    values, vecs = np.linalg.eigh(np.cov((data - mean).T))
    order = np.argsort(values)[::-1]
    components = vecs[:, order[:dimensions]].T
    flip = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components *= flip[:, None]
    total = float(values.clip(min=0).sum()) or 1.0
    explained = float(values[order[:dimensions]].clip(min=0).sum()) / total
    return mean.astype(np.float32), components.astype(np.float32), explained


def fit_rotation(vectors: np.ndarray) -> tuple[np.ndarray, float]:
    """``(basis, leading)``: the orthonormal basis of the vectors' principal axes (eigenvectors
    of the uncentred second moment ``XᵀX``, largest eigenvalue first; shape ``(d, d)``) and the
    share of the vectors' energy in the leading quarter of the dimensions. Signs are fixed as in
    :func:`fit_pca`."""
    data = np.asarray(vectors, dtype=np.float64)
    values, vecs = np.linalg.eigh(data.T @ data)
    order = np.argsort(values)[::-1]
    basis = vecs[:, order].T
    flip = np.sign(basis[np.arange(len(basis)), np.abs(basis).argmax(axis=1)])
    basis *= flip[:, None]
    total = float(values.clip(min=0).sum()) or 1.0
    leading = float(values[order[: max(1, len(order) // 4)]].clip(min=0).sum()) / total
    return basis.astype(np.float32), leading


class Projection:
    """A fitted PCA or rotation: ``normalise((x - mean) @ components.T)`` (a rotation's mean is
    zero and its components a whole orthonormal basis)."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, revision: str) -> None:
        self.mean = mean.astype(np.float32)
        self.components = components.astype(np.float32)
        self.revision = revision
        #: ``(base identity, pointer file stamp)`` this fit was read under (see ``projection``).
        self.key: tuple[str, int | None] | None = None

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        return l2_normalize((np.asarray(vectors, np.float32) - self.mean) @ self.components.T)


class ReducedEncoder(BaseEncoder):
    """The base encoder's vectors with fewer dimensions (see the module docstring)."""

    option_names = frozenset({"base", "method", "dimensions", "fit_sample", "model_dir"})

    def __init__(self, alias: str, **options):
        super().__init__(alias, **options)
        base = options.get("base")
        if not isinstance(base, str) or not base:
            raise ImproperlyConfigured(f"Reduced encoder {alias!r}: 'base' must name an alias.")
        if base == alias:
            raise ImproperlyConfigured(f"Reduced encoder {alias!r} cannot reduce itself.")
        self.method = options.get("method", "pca")
        if self.method not in METHODS:
            raise ImproperlyConfigured(
                f"Reduced encoder {alias!r}: 'method' must be one of {', '.join(METHODS)}, "
                f"got {self.method!r}."
            )
        dims = options.get("dimensions")
        if self.method == "rotate":
            if dims is not None:
                raise ImproperlyConfigured(
                    f"Reduced encoder {alias!r}: 'rotate' keeps every dimension of the base; "
                    "remove 'dimensions' (index fewer with the 'index_dimensions' option)."
                )
            dims = 1
        elif isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise ImproperlyConfigured(
                f"Reduced encoder {alias!r}: 'dimensions' must be a positive whole number, "
                f"got {dims!r}."
            )
        #: The dimensions kept (``None`` for ``"rotate"``: the base's).
        self.target_dims: int | None = None if self.method == "rotate" else dims
        sample = options.get("fit_sample", DEFAULT_FIT_SAMPLE)
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 2 * dims:
            raise ImproperlyConfigured(
                f"Reduced encoder {alias!r}: 'fit_sample' must be a whole number of at least "
                f"2 × dimensions ({2 * dims}), got {sample!r}."
            )
        self.fit_sample = sample
        self._lock = threading.Lock()
        self._projection: Projection | None = None

    # -- the base -------------------------------------------------------------------------------

    def base_encoder(self) -> BaseEncoder:
        """The encoder named by ``base``."""
        return get_encoder(self.options["base"])

    @property
    def uses_text(self) -> bool:  # type: ignore[override]
        return self.base_encoder().uses_text

    @property
    def folds_in_users(self) -> bool:  # type: ignore[override]
        return self.base_encoder().folds_in_users

    @property
    def profile_uses_all_items(self) -> bool:  # type: ignore[override]
        return self.base_encoder().profile_uses_all_items

    def _check_dims(self, base_dims: int) -> int:
        """The dimensions of this encoder's vectors, given the base's."""
        if self.target_dims is None:
            return base_dims
        if self.target_dims >= base_dims:
            raise ImproperlyConfigured(
                f"Reduced encoder {self.alias!r}: 'dimensions' ({self.target_dims}) must be "
                f"fewer than those of {self.options['base']!r} ({base_dims})."
            )
        return self.target_dims

    # -- identity -------------------------------------------------------------------------------

    @property
    def identity(self) -> EncoderIdentity:
        # Never cached: a refit (or a new base model) changes it.
        return self.get_identity()

    def get_identity(self) -> EncoderIdentity:
        base = self.base_encoder().identity
        dims = self._check_dims(base.dimensions)
        if self.method == "truncate":
            revision = hashlib.sha1(base.as_string().encode()).hexdigest()[:12]
        else:
            revision = self.projection().revision
        return EncoderIdentity(f"{self.method}{dims}", revision, dims, True)

    # -- the fit --------------------------------------------------------------------------------

    @property
    def model_dir(self) -> Path:
        return alias_model_dir(self.options, self.alias)

    def _base_key(self) -> str:
        return self.base_encoder().identity.as_string()

    def _read_current(self) -> Projection | None:
        pointer = self.model_dir / "current.json"
        try:
            meta = json.loads(pointer.read_text())
            if meta.get("base_identity") != self._base_key():
                return None
            # A fit made under another method or dimensions is not this encoder's.
            if meta.get("method", "pca") != self.method:
                return None
            with np.load(self.model_dir / f"pca-{meta['revision']}.npz") as data:
                projection = Projection(data["mean"], data["components"], meta["revision"])
            wanted = self.target_dims or projection.components.shape[1]
            return projection if projection.components.shape[0] == wanted else None
        except (OSError, ValueError, KeyError):
            return None

    def _pointer_stamp(self) -> int | None:
        try:
            return (self.model_dir / "current.json").stat().st_mtime_ns
        except OSError:
            return None

    def projection(self) -> Projection:
        """The current PCA fit, fitted now (once, under a file lock) when there is none.

        Cached per process until the fit's pointer file changes (a refit in another process)
        or the base's identity does.
        """
        key = (self._base_key(), self._pointer_stamp())
        cached = self._projection
        if cached is not None and key[1] is not None and cached.key == key:
            return cached
        with self._lock:
            found = self._read_current()
            if found is None:
                self.model_dir.mkdir(parents=True, exist_ok=True)
                with open(self.model_dir / "fit.lock", "w") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    found = self._read_current()  # another process may have fitted meanwhile
                    if found is None:
                        found = self._fit_and_save()[0]
            found.key = (self._base_key(), self._pointer_stamp())
            self._projection = found
            return found

    def refit(self) -> dict[str, Any]:
        """Fit again on the vectors stored now; returns a summary (``revision``, ``changed``…).

        The new fit becomes the encoder's identity at once; re-embed the registrations using
        this alias afterwards (``embrec_fit_reduction`` queues that).
        """
        if self.method == "truncate":
            raise ImproperlyConfigured(
                f"Reduced encoder {self.alias!r} truncates ({self.method!r}): nothing to fit."
            )
        with self._lock:
            before = self._read_current()
            self.model_dir.mkdir(parents=True, exist_ok=True)
            with open(self.model_dir / "fit.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                projection, summary = self._fit_and_save()
            projection.key = (self._base_key(), self._pointer_stamp())
            self._projection = projection
        summary["previous_revision"] = before.revision if before else None
        summary["changed"] = summary["previous_revision"] != summary["revision"]
        return summary

    def _fit_and_save(self) -> tuple[Projection, dict[str, Any]]:
        base = self.base_encoder()
        dims = self._check_dims(base.identity.dimensions)
        vectors, source = self.fit_vectors()
        if len(vectors) < 2 * dims:
            raise ValueError(
                f"Reduced encoder {self.alias!r}: {len(vectors)} vectors to fit a "
                f"{dims}-dimension {self.method} on; it needs at least {2 * dims} "
                "(index more objects first"
                + (")." if self.method == "rotate" else ", or lower 'dimensions').")
            )
        if self.method == "rotate":
            components, explained = fit_rotation(vectors)
            mean = np.zeros(components.shape[1], np.float32)
        else:
            mean, components, explained = fit_pca(vectors, dims)
        digest = hashlib.sha1(self._base_key().encode())
        digest.update(mean.tobytes())
        digest.update(components.tobytes())
        revision = digest.hexdigest()[:12]
        path = self.model_dir / f"pca-{revision}.npz"
        atomic_write(path, lambda fh: np.savez(fh, mean=mean, components=components))
        summary = {
            "revision": revision,
            "base_identity": self._base_key(),
            "vectors": len(vectors),
            "source": source,
            "method": self.method,
            # PCA: the variance its dimensions keep; rotate: the energy of the leading quarter.
            "explained_variance": round(explained, 4),
        }
        text = json.dumps(summary, indent=2).encode()
        atomic_write(self.model_dir / "current.json", lambda fh: fh.write(text))
        logger.info(
            "Fitted %s %s for encoder %r on %d %s vectors (%.1f%% of the variance).",
            self.method,
            revision,
            self.alias,
            len(vectors),
            source,
            100 * explained,
        )
        return Projection(mean, components, revision), summary

    def fit_vectors(self) -> tuple[np.ndarray, str]:
        """The vectors a PCA is fitted on, and where they came from (``stored`` or ``encoded``)."""
        base = self.base_encoder()
        with connection.cursor() as cursor:
            # A deterministic sample spread over the whole catalog (not the oldest rows).
            cursor.execute(
                "SELECT vector FROM embrec_embedding WHERE encoder = %s AND identity = %s "
                "ORDER BY md5(content_type_id::text || ':' || object_pk) LIMIT %s",
                [self.options["base"], base.identity.as_string(), self.fit_sample],
            )
            stored = [parse_vector(row[0]) for row in cursor.fetchall()]
        if len(stored) >= 2 * (self.target_dims or base.identity.dimensions):
            return np.stack(stored), "stored"
        return self._encode_sample(base), "encoded"

    def _encode_sample(self, base: BaseEncoder) -> np.ndarray:
        if not base.uses_text:
            return np.zeros((0, base.dimensions), np.float32)
        recs = registrations_using(self.alias)
        per_rec = max(1, self.fit_sample // max(1, len(recs)))
        texts: list[str] = []
        for rec in recs:
            objects = rec.get_queryset().order_by("?")[:per_rec]
            texts.extend(rec.get_text(obj) for obj in objects)
        if not texts:
            return np.zeros((0, base.dimensions), np.float32)
        return base.encode(texts)

    # -- encoding -------------------------------------------------------------------------------

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        """The base's vectors (rows) reduced: projected, rotated or truncated, then
        L2-normalised."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.method == "truncate":
            return l2_normalize(vectors[:, : self.target_dims].copy())
        return self.projection().apply(vectors)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.reduce(self.base_encoder().encode(texts))

    def encode_objects(self, rec, objects: Sequence, texts: Sequence[str]) -> list:
        parts = list(self.base_encoder().encode_objects(rec, objects, texts))
        present = [i for i, v in enumerate(parts) if v is not None]
        out: list[np.ndarray | None] = [None] * len(parts)
        if present:
            reduced = self.reduce(np.stack([parts[i] for i in present]))
            for row, i in enumerate(present):
                out[i] = reduced[row]
        return out

    def fold_in_user(self, rec, weights) -> np.ndarray | None:
        vector = self.base_encoder().fold_in_user(rec, weights)
        return None if vector is None else self.reduce(vector[None, :])[0]
