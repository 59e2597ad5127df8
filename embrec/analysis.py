"""What the catalogue analyses (:mod:`embrec.clusters`, :mod:`embrec.duplicates`) share.

An analysis reads the stored vectors of one registered model under one encoder: the rows of the
encoder's live version (:mod:`embrec.versions`; before any version is registered, of the identity
that wrote the newest vector), so vectors of two models are never compared while a new model is
backfilled. :func:`target`
resolves a model and an encoder into a :class:`Target` and fails with
:class:`~embrec.exceptions.AnalysisError` (a message for a command or a page) when the model is not registered, the encoder is not one of its
encoders or there is no vector yet.

Vectors are read in keyset batches (:func:`iter_vectors`: ``object_pk > last ORDER BY object_pk
LIMIT n``), so
memory holds one batch at a time whatever the size of the catalogue. Results are cached in
Django's cache under :func:`cache_key`, which names the vectors' state (identity, count, latest
update) and the parameters: when vectors change, the key changes and the analysis runs again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db import models
from django.db.models import Count, Max

from embrec.encoders import get_encoder
from embrec.exceptions import AnalysisError
from embrec.items import Recommendable
from embrec.models import Embedding, content_type_of
from embrec.read import retrieval
from embrec.registry import NotRegistered, registry
from embrec.storage import IndexSpec, parse_vector
from embrec.vectors import l2_normalize
from embrec.versions import read_version

#: Vectors read per keyset batch.
BATCH_SIZE = 1000
#: How long a result stays cached (its key changes with the vectors anyway).
TIMEOUT = 24 * 3600


@dataclass(frozen=True)
class Target:
    """The vectors one analysis reads: one model, one encoder, one encoder identity."""

    rec: Recommendable
    encoder: str
    content_type_id: int
    identity: str
    dimensions: int

    @property
    def label(self) -> str:
        return self.rec.label

    def rows(self) -> models.QuerySet:
        """The :class:`~embrec.models.Embedding` rows of the target."""
        return Embedding.objects.filter(
            content_type_id=self.content_type_id,
            encoder=self.encoder,
            identity=self.identity,
            dimensions=self.dimensions,
        )

    @property
    def spec(self) -> IndexSpec:
        """The HNSW index that holds these vectors (see :mod:`embrec.storage`)."""
        return retrieval.index_spec(
            self.rec, self.encoder, self.dimensions, read_version(self.encoder)
        )

    @property
    def uses_text(self) -> bool:
        """Whether the encoder embeds the objects' text (so clusters can be named by terms)."""
        return bool(get_encoder(self.encoder).uses_text)


def registration(model: Any) -> Recommendable:
    """The registration of a model class, instance, ``"app_label.model"`` label or registration."""
    if isinstance(model, Recommendable):
        return model
    if isinstance(model, str) and model.count(".") != 1:
        raise AnalysisError(f"{model!r} is not a model label; use app_label.ModelName.")
    try:
        return registry.get(model)
    except NotRegistered as exc:
        raise AnalysisError(str(exc)) from None


def target(model: Any, encoder: str | None = None) -> Target:
    """The vectors of ``model`` under ``encoder`` (default: the registration's first encoder)."""
    rec = registration(model)
    encoders = rec.get_encoders()
    alias = encoder or (encoders[0] if encoders else "")
    if alias not in encoders:
        raise AnalysisError(
            f"{rec.label} is embedded with {', '.join(encoders) or 'no encoder'}, not {alias!r}."
        )
    ct = content_type_of(rec.model)
    rows = Embedding.objects.filter(content_type=ct, encoder=alias)
    live = read_version(alias).identity
    if live is not None:
        rows = rows.filter(identity=live)
    newest = rows.order_by("-updated_at", "-id").values_list("identity", "dimensions").first()
    if newest is None:
        raise AnalysisError(
            f"{rec.label} has no {alias!r} vectors yet (run manage.py embrec_reindex {rec.label})."
        )
    return Target(rec, alias, ct.id, newest[0], int(newest[1]))


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): dot products are cosine similarities."""
    return l2_normalize(np.asarray(vectors, dtype=np.float32))


def row_ids(tgt: Target) -> np.ndarray:
    """The ids of the target's rows, sorted (one narrow query; 8 bytes per vector)."""
    rows = tgt.rows().order_by("id").values_list("id", flat=True)
    return np.fromiter(rows.iterator(chunk_size=10000), dtype=np.int64)


def id_batches(ids: np.ndarray, batch_size: int) -> Iterator[list[int]]:
    """``ids`` in consecutive batches of at most ``batch_size``."""
    for start in range(0, len(ids), batch_size):
        yield [int(i) for i in ids[start : start + batch_size]]


def iter_vectors(
    tgt: Target, batch_size: int = BATCH_SIZE, ids: np.ndarray | None = None
) -> Iterator[tuple[list[int], list[str], np.ndarray]]:
    """``(row ids, object pks, unit vectors)`` batches of the target's vectors, in id order.

    The rows' ids (or the given ``ids``) are read first; then each batch of ``batch_size`` is
    read by primary key, so one batch of vectors is in memory at a time and no query reads more
    than its batch, however the planner estimates the target's filters.
    """
    rows = tgt.rows().order_by("id")
    for chunk in id_batches(row_ids(tgt) if ids is None else ids, batch_size):
        batch = list(rows.filter(id__in=chunk).values_list("id", "object_pk", "vector"))
        if batch:
            yield _unpack(batch)


def _unpack(batch: list[tuple]) -> tuple[list[int], list[str], np.ndarray]:
    ids = [row[0] for row in batch]
    pks = [row[1] for row in batch]
    return ids, pks, normalize(np.vstack([parse_vector(row[2]) for row in batch]))


def load_objects(rec: Recommendable, pks: Iterable[str]) -> dict[str, models.Model]:
    """The objects with these pk strings, by pk string (one query; gone objects are absent)."""
    pk_field = rec.model._meta.pk
    wanted = set()
    for pk in pks:
        try:
            wanted.add(pk_field.to_python(pk))
        except Exception:  # a pk string the model no longer accepts: the object is gone
            continue
    if not wanted:
        return {}
    found = rec.model._default_manager.in_bulk(list(wanted))
    return {str(pk): obj for pk, obj in found.items()}


def cache_key(kind: str, tgt: Target, params: dict[str, Any]) -> str:
    """The cache key of an analysis of ``tgt``'s vectors as they are now (one aggregate query)."""
    state = tgt.rows().aggregate(count=Count("id"), latest=Max("updated_at"))
    latest = state["latest"].isoformat() if state["latest"] else ""
    raw = json.dumps(
        [kind, tgt.label, tgt.encoder, tgt.identity, state["count"], latest, params],
        sort_keys=True,
        default=str,
    )
    return f"embrec:{kind}:" + hashlib.sha256(raw.encode()).hexdigest()[:32]


def cached(kind: str, tgt: Target, params: dict[str, Any]) -> tuple[str, dict | None]:
    """``(key, result or None)``: the cached result for the current vectors, if computed."""
    key = cache_key(kind, tgt, params)
    return key, cache.get(key)


def store(key: str, result: dict) -> None:
    """Cache ``result`` under ``key`` (see :func:`cache_key`)."""
    cache.set(key, result, TIMEOUT)


def build(
    kind: str, find: Callable[..., Any], model: Any, encoder: str | None = None, **params: Any
) -> dict[str, Any]:
    """Run ``find(rec, encoder, **params)`` and cache its ``as_dict()`` under the key of the
    vectors' state and ``params`` (:func:`cache_key`): what an admin analysis page shows.

    An :class:`~embrec.exceptions.AnalysisError` of the computation (a bad parameter, a missing
    index) is cached as ``{"error": message}`` for the page; one of the target (unknown model or
    encoder, no vectors) is raised.
    """
    tgt = target(model, encoder)
    key = cache_key(kind, tgt, dict(sorted(params.items())))
    try:
        result = find(tgt.rec, tgt.encoder, **params).as_dict()
    except AnalysisError as exc:  # e.g. a bad parameter: the page shows the message
        result = {"error": str(exc)}
    store(key, result)
    return result
