"""Adaptive hybrid: behaviour where an item has enough of it, mapped content where it has not.

A plain :class:`~embrec.encoders.hybrid.HybridEncoder` concatenates a behavioural vector
(item2vec, ALS) with a content vector (MiniLM). Two things go wrong with it: an item seen by two
users gets a behavioural vector as trusted as a blockbuster's, though it is mostly noise (such
items become *hubs*, the nearest neighbour of hundreds of others); and a new item, with only a
content part, lives in another region of the space than every established item, so it is never
near a user's vector and never recommended.

This encoder keeps everything in the behavioural space:

1. a ridge regression ``W`` maps content vectors into the behavioural space; it is fitted on the
   items with at least ``fit_support`` distinct users (those whose behavioural vector is good);
2. an item's vector is ``normalise(s · b + (1 − s) · normalise(W c))``, where ``b`` is its own
   (unit) behavioural vector, ``c`` its content vector and ``s = n / (n + shrinkage)`` its share of
   behaviour, ``n`` the number of distinct users who interacted with it (its *support*);
   items with fewer than ``min_support`` users get ``s = 0``: the mapped content vector alone.

An item nobody has interacted with therefore gets a vector right where items of similar content
live in the behavioural space, on the same (cosine) scale as every other item: it shows up in
similar-item lists and in personal recommendations from the moment it is saved. With an item2vec
behaviour this is also how rarely-seen items are made robust: their noisy vector is shrunk
towards what their content predicts.

User vectors are the usual mean of item vectors (``USER_VECTOR_*`` settings). Search (text) uses
the mapped content vector of the query.

``W`` is fitted when first needed for a registered model (in the worker that embeds it) and
kept under ``<model_dir>/<alias>/`` keyed by the encoder's revision, which changes whenever the
behavioural or content encoder changes (retraining included): a stale map is never used. Content
vectors are read from the embedding table when stored under the content encoder's current
identity, and encoded otherwise.

Options:

* ``behaviour`` — alias of a trained encoder (item2vec, ALS); required.
* ``content`` — alias of a text encoder (MiniLM); required.
* ``shrinkage`` (20) — ``k`` in ``n / (n + k)``: the support at which behaviour and content weigh
  the same.
* ``min_support`` (5) — items with fewer distinct users get no behavioural part.
* ``fit_support`` (20) — items with at least this many users train the map.
* ``ridge`` (1.0) — L2 penalty of the map.
* ``center`` (False) — centre behavioural vectors on their mean before mapping and blending (the
  ridge map regresses towards the mean, so mapped vectors lean towards the average item). On
  MovieLens with ALS it did not help (docs/ENCODERS.md); try it with item2vec, whose vectors
  share a strong common direction.
* ``rescale`` (True) — stretch mapped vectors away from the mean of the behavioural vectors by
  the ratio of the real vectors' spread to the predictions' (ridge predictions are shrunk
  towards the mean, so without it mapped items are near-neighbours of everything).
* ``uncertainty`` (0) — how much less an item known only from its content counts in *other*
  items' lists and in personal rankings: its cosine with everything is scaled by
  ``√(1 − uncertainty · (1 − s))`` (through 64 extra dimensions, see :func:`blend`), its own
  similar list is unchanged. 0 adds no dimensions.
* ``model_dir`` — where maps are kept (default: the behavioural encoder's folder's parent).
"""

from __future__ import annotations

import hashlib
import json
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.core.exceptions import ImproperlyConfigured

from embrec.encoders.base import INDEX_OPTION_NAMES, BaseEncoder, EncoderIdentity, l2_normalize
from embrec.encoders.loading import get_encoder
from embrec.encoders.trained import UNTRAINED, TrainedEncoder, atomic_write
from embrec.models import Embedding, content_type_of
from embrec.registry import registry
from embrec.storage import parse_vector

DEFAULTS = {
    "shrinkage": 20.0,
    "min_support": 5,
    "fit_support": 20,
    "ridge": 1.0,
    "center": 0.0,
    "rescale": 1.0,
    "uncertainty": 0.0,
}


def fit_content_map(content: np.ndarray, behaviour: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Ridge regression from (unit) content vectors to behavioural vectors, with an intercept.

    Returns ``W`` of shape ``(d_content + 1, d_behaviour)``; apply it through :class:`ContentMap`.
    """
    if content.shape[0] == 0:
        raise ValueError("The content map needs at least one item with behaviour.")
    x = np.hstack([l2_normalize(np.asarray(content, np.float32)), np.ones((content.shape[0], 1))])
    x = x.astype(np.float64)
    penalty = float(ridge) * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    return np.linalg.solve(x.T @ x + penalty, x.T @ np.asarray(behaviour, np.float64))


@dataclass
class ContentMap:
    """A fitted map from content vectors into the behavioural space.

    ``w`` is the ridge solution (with intercept), ``center`` the vector subtracted from
    behavioural vectors before mapping and blending (zeros: no centring), ``anchor`` the mean of
    the mapped targets and ``spread`` the factor applied to a prediction's distance from it (ridge
    predictions are closer to the mean than real vectors; ``spread`` > 1 restores their spread,
    so mapped vectors do not all crowd the average item).
    """

    w: np.ndarray
    center: np.ndarray
    anchor: np.ndarray
    spread: float = 1.0

    def apply(self, content: np.ndarray) -> np.ndarray:
        """Mapped unit vectors of ``content`` rows (zero rows stay zero)."""
        content = np.asarray(content, np.float32)
        present = np.linalg.norm(content, axis=1) > 0
        x = np.hstack([l2_normalize(content), np.ones((content.shape[0], 1), np.float32)])
        raw = x @ self.w
        raw = self.anchor + float(self.spread) * (raw - self.anchor)
        mapped = l2_normalize(raw.astype(np.float32))
        mapped[~present] = 0.0
        return mapped

    def to_array(self) -> np.ndarray:
        dims = self.w.shape[1]
        return np.vstack(
            [self.w, self.center[None, :], self.anchor[None, :], np.full((1, dims), self.spread)]
        )

    @classmethod
    def from_array(cls, array: np.ndarray) -> ContentMap:
        return cls(array[:-3], array[-3], array[-2], float(array[-1][0]))


def fit_map(
    content: np.ndarray,
    behaviour: np.ndarray,
    *,
    ridge: float = 1.0,
    center: np.ndarray | None = None,
    rescale: bool = True,
) -> ContentMap:
    """Fit a :class:`ContentMap` from ``content`` rows to (unit) ``behaviour`` rows, centring
    the targets on ``center`` first when given, and restoring the targets' spread around their
    mean when ``rescale``."""
    behaviour = np.asarray(behaviour, np.float64)
    dims = behaviour.shape[1]
    center = np.zeros(dims) if center is None else np.asarray(center, np.float64)
    targets = behaviour - center
    w = fit_content_map(content, targets, ridge)
    anchor = targets.mean(axis=0)
    spread = 1.0
    if rescale:
        x = np.hstack([l2_normalize(np.asarray(content, np.float32)), np.ones((len(targets), 1))])
        predicted = np.linalg.norm(x @ w - anchor, axis=1).mean()
        actual = np.linalg.norm(targets - anchor, axis=1).mean()
        spread = float(actual / predicted) if predicted > 1e-9 else 1.0
    return ContentMap(w, center.astype(np.float32), anchor.astype(np.float32), spread)


def blend(
    own: np.ndarray,
    has_own: np.ndarray,
    mapped: np.ndarray,
    support: np.ndarray,
    *,
    shrinkage: float,
    min_support: float,
    mean: np.ndarray | None = None,
    uncertainty: float = 0.0,
    keys: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``normalise(s · own + (1 − s) · mapped)`` with ``s = n / (n + shrinkage)`` (0 below
    ``min_support`` or without an own vector); with ``mean``, own vectors are centred on it first
    (``mapped`` must then come from a map fitted on centred vectors).

    ``uncertainty`` ``u`` > 0 appends :data:`UNCERTAINTY_DIMS` dimensions: each vector becomes
    ``[√(1 − p) · v, √p · r]`` with ``p = u · (1 − s)`` and ``r`` a fixed pseudo-random unit vector
    per item (seeded by its key in ``keys``). Its cosine with any other item ``j`` is then
    ``√(1 − p) · v·v_j`` up to the small ``r·r_j`` term: an item known only from its content keeps
    its own neighbours in the same order but ranks lower, by a constant factor, in everyone
    else's lists. Returns ``(vectors, has_vector)``."""
    support = np.asarray(support, np.float64)
    own = np.asarray(own, np.float32)
    if mean is not None:
        own = np.where(np.asarray(has_own, bool)[:, None], own - mean[None, :], 0.0)
    share = support / (support + float(shrinkage)) if shrinkage > 0 else np.ones_like(support)
    share = np.where(np.asarray(has_own, bool) & (support >= float(min_support)), share, 0.0)
    merged = share[:, None] * l2_normalize(own.astype(np.float32)) + (1.0 - share)[
        :, None
    ] * np.asarray(mapped, np.float32)
    has = np.linalg.norm(merged, axis=1) > 1e-9
    vectors = l2_normalize(merged.astype(np.float32))
    if uncertainty > 0:
        if keys is None or len(keys) != len(vectors):
            raise ValueError("uncertainty needs one key per item")
        p = np.clip(float(uncertainty) * (1.0 - share), 0.0, 1.0)
        extra = np.stack([_private_direction(str(key)) for key in keys])
        vectors = np.hstack(
            [vectors * np.sqrt(1.0 - p)[:, None], extra * np.sqrt(p)[:, None]]
        ).astype(np.float32)
        vectors[~has] = 0.0
    return vectors, has


#: Extra dimensions added by the ``uncertainty`` option.
UNCERTAINTY_DIMS = 64


def _private_direction(key: str) -> np.ndarray:
    """A unit vector in the uncertainty dimensions, the same for ``key`` in every process."""
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    vector = rng.normal(size=UNCERTAINTY_DIMS)
    return l2_normalize(vector[None, :])[0]


class AdaptiveHybridEncoder(BaseEncoder):
    """Behaviour by support, mapped content for rare and new items (see the module docstring)."""

    def __init__(self, alias: str, **options):
        super().__init__(alias, **options)
        unknown = (
            set(options)
            - set(DEFAULTS)
            - {"behaviour", "content", "model_dir"}
            - INDEX_OPTION_NAMES
        )
        if unknown:
            raise ImproperlyConfigured(
                f"EMBREC['ENCODERS'][{alias!r}]['OPTIONS'] has unknown adaptive hybrid "
                f"option(s): {', '.join(sorted(unknown))}."
            )
        for key in ("behaviour", "content"):
            if not isinstance(options.get(key), str) or not options[key]:
                raise ImproperlyConfigured(
                    f"EMBREC['ENCODERS'][{alias!r}]['OPTIONS']['{key}'] must name an encoder alias."
                )
            if options[key] == alias:
                raise ImproperlyConfigured(f"Adaptive hybrid {alias!r} cannot include itself.")
        self.params: dict[str, Any] = {k: float(options.get(k, v)) for k, v in DEFAULTS.items()}
        self.params["center"] = bool(options.get("center", False))
        self.params["rescale"] = bool(options.get("rescale", True))
        if not 0.0 <= self.params["uncertainty"] < 1.0:
            raise ImproperlyConfigured(f"Adaptive hybrid {alias!r}: uncertainty must be in [0, 1).")
        if self.params["shrinkage"] < 0 or self.params["ridge"] < 0:
            raise ImproperlyConfigured(
                f"Adaptive hybrid {alias!r}: shrinkage and ridge must not be negative."
            )
        self._lock = threading.Lock()
        self._maps: dict[tuple[str, int], ContentMap] = {}

    # -- parts ------------------------------------------------------------------------------

    def behaviour_encoder(self) -> TrainedEncoder:
        encoder = get_encoder(self.options["behaviour"])
        if not isinstance(encoder, TrainedEncoder):
            raise ImproperlyConfigured(
                f"Adaptive hybrid {self.alias!r}: 'behaviour' must be a trained encoder "
                f"(item2vec, ALS), not {type(encoder).__name__}."
            )
        return encoder

    def content_encoder(self) -> BaseEncoder:
        encoder = get_encoder(self.options["content"])
        if not encoder.uses_text:
            raise ImproperlyConfigured(
                f"Adaptive hybrid {self.alias!r}: 'content' must be a text encoder."
            )
        return encoder

    @property
    def identity(self) -> EncoderIdentity:
        # Never cached: retraining the behavioural part changes it.
        return self.get_identity()

    def get_identity(self) -> EncoderIdentity:
        behaviour = self.behaviour_encoder().identity
        content = self.content_encoder().identity
        described = [behaviour.as_string(), content.as_string(), self.params]
        revision = hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]
        if behaviour.revision == UNTRAINED:
            revision = UNTRAINED
        extra = UNCERTAINTY_DIMS if self.params["uncertainty"] > 0 else 0
        return EncoderIdentity("adaptive", revision, behaviour.dimensions + extra, True)

    @property
    def model_dir(self) -> Path:
        base = self.options.get("model_dir")
        if base:
            return Path(base) / self.alias
        return self.behaviour_encoder().model_dir.parent / self.alias

    # -- the content map --------------------------------------------------------------------

    def content_map(self, rec) -> ContentMap | None:
        """``W`` for registration ``rec`` under the current revision (fitted when missing);
        ``None`` while the behavioural encoder is untrained."""
        revision = self.identity.revision
        if revision == UNTRAINED:
            return None
        ct = content_type_of(rec.model)
        key = (revision, ct.id)
        cached = self._maps.get(key)
        if cached is not None:
            return cached
        with self._lock:
            if key in self._maps:
                return self._maps[key]
            path = self.model_dir / f"map-{revision}-{ct.id}.npy"
            if path.exists():
                w = ContentMap.from_array(np.load(path, allow_pickle=False))
            else:
                w = self.fit_map(rec, ct.id)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda fh: np.save(fh, w.to_array()))
            self._maps = {k: v for k, v in self._maps.items() if k[0] == revision}
            self._maps[key] = w
            return w

    def fit_map(self, rec, content_type_id: int) -> ContentMap:
        """Fit ``W`` on the items of ``rec`` with at least ``fit_support`` users."""
        behaviour = self.behaviour_encoder()
        model = behaviour.model_arrays()
        if model is None:
            raise ValueError(
                f"Adaptive hybrid {self.alias!r}: its behavioural encoder is untrained."
            )
        prefix = f"{content_type_id}:"
        threshold = max(self.params["fit_support"], 1.0)
        rows = [
            (key[len(prefix) :], n)
            for n, key in enumerate(model["keys"])
            if key.startswith(prefix) and float(model["support"][n]) >= threshold
        ]
        if not rows:  # little data: fit on every item with behaviour
            rows = [
                (k[len(prefix) :], n) for n, k in enumerate(model["keys"]) if k.startswith(prefix)
            ]
        content, found = self.stored_content(rec, [pk for pk, _ in rows])
        keep = [n for (pk, n) in rows if pk in found]
        if not keep:
            raise ValueError(f"Adaptive hybrid {self.alias!r}: no item has both parts.")
        matrix = np.stack([content[pk] for pk, _ in rows if pk in found])
        return fit_map(
            matrix,
            model["vectors"][keep],
            ridge=self.params["ridge"],
            center=self.behaviour_mean(model, prefix),
            rescale=self.params["rescale"],
        )

    def behaviour_mean(self, model, prefix: str) -> np.ndarray:
        """Mean behavioural vector of the registration's items (zeros when ``center`` is off)."""
        dims = model["vectors"].shape[1]
        if not self.params["center"]:
            return np.zeros(dims, np.float32)
        rows = [n for n, k in enumerate(model["keys"]) if k.startswith(prefix)]
        return model["vectors"][rows].mean(axis=0).astype(np.float32)

    def stored_content(self, rec, pks: Sequence[str]) -> tuple[dict[str, np.ndarray], set[str]]:
        """Content vectors of ``pks``: stored ones under the content encoder's identity, the rest
        encoded now from :meth:`~embrec.Recommendable.get_text`."""
        encoder = self.content_encoder()
        ct = content_type_of(rec.model)
        wanted = set(pks)
        out: dict[str, np.ndarray] = {}
        stored = Embedding.objects.filter(
            content_type=ct, encoder=self.options["content"], identity=encoder.identity.as_string()
        ).values_list("object_pk", "vector")
        for pk, vector in stored.iterator(chunk_size=2000):
            if pk in wanted:
                out[pk] = parse_vector(vector)
        missing = [pk for pk in pks if pk not in out]
        if missing:
            objects = rec.get_queryset().in_bulk([rec.pk_from_string(pk) for pk in missing])
            by_key = {str(pk): obj for pk, obj in objects.items()}
            keys = [k for k in missing if k in by_key]
            for lo in range(0, len(keys), 256):
                chunk = [by_key[k] for k in keys[lo : lo + 256]]
                texts = [rec.get_text(obj) for obj in chunk]
                vectors = encoder.encode_objects(rec, chunk, texts)
                for key, vector in zip(keys[lo : lo + 256], vectors, strict=True):
                    if vector is not None:
                        out[key] = np.asarray(vector, np.float32)
        return out, set(out)

    # -- encoding ---------------------------------------------------------------------------

    def encode_objects(self, rec, objects: Sequence, texts: Sequence[str]) -> list:
        w = self.content_map(rec)
        if w is None:
            return [None] * len(objects)
        behaviour = self.behaviour_encoder()
        dims = behaviour.dimensions
        own_list = list(behaviour.encode_objects(rec, objects, texts))
        has_own = np.array([v is not None for v in own_list])
        own = np.stack(
            [
                np.zeros(dims, np.float32) if v is None else np.asarray(v, np.float32)
                for v in own_list
            ]
        )
        support = behaviour.support_for_tokens(behaviour.tokens_for(rec, objects))
        content_list = list(self.content_encoder().encode_objects(rec, objects, texts))
        content_dims = w.w.shape[0] - 1
        content = np.stack(
            [
                np.zeros(content_dims, np.float32) if v is None else np.asarray(v, np.float32)
                for v in content_list
            ]
        )
        vectors, has = blend(
            own,
            has_own,
            w.apply(content),
            support,
            shrinkage=self.params["shrinkage"],
            min_support=self.params["min_support"],
            mean=w.center if self.params["center"] else None,
            uncertainty=self.params["uncertainty"],
            keys=behaviour.tokens_for(rec, objects),
        )
        return [vectors[n] if has[n] else None for n in range(len(objects))]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Search queries: the mapped content vector of the text (needs a fitted map)."""
        users = [r for r in registry.all() if self.alias in r.get_encoders()]
        w = self.content_map(users[0]) if users else None
        if w is None:
            raise ImproperlyConfigured(
                f"Adaptive hybrid {self.alias!r} cannot encode text before its behavioural "
                "encoder is trained."
            )
        mapped = w.apply(self.content_encoder().encode(texts))
        if self.params["uncertainty"] > 0:
            mapped = np.hstack([mapped, np.zeros((len(mapped), UNCERTAINTY_DIMS), np.float32)])
        return mapped
