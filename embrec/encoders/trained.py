"""Encoders trained on the site's interactions: the storage, loading and training plumbing.

A :class:`TrainedEncoder` learns item vectors from the ``Interaction`` table (item2vec, ALS) or
from other encoders' vectors (the adaptive hybrid). Training is explicit: ``manage.py
embrec_train``, or the ``embrec.train_item2vec`` Celery task (it trains any encoder of this kind).
The model is saved under ``OPTIONS["model_dir"]/<alias>/`` as ``meta.json`` + ``vectors.npz``
(item tokens, vectors, support = distinct users per item, and whatever else the encoder needs);
its revision is a fingerprint of the training data and parameters, so retraining on other data
changes the encoder's identity and marks every stored vector of the alias (and of hybrids built on
it) stale. Processes notice a new model by the mtime of ``meta.json``.

Options every trained encoder accepts:

* ``model_dir`` — where models are stored (default ``<BASE_DIR>/.embrec/models/<database name>``).
* ``kinds`` — interaction kinds used for training (default: all).
* ``min_weight`` — interactions with weight at most this are ignored (default 0: dislikes and
  other negative signals are not consumption).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.utils.module_loading import import_string

from embrec.conf import embrec_settings
from embrec.encoders.base import INDEX_OPTION_NAMES, BaseEncoder, EncoderIdentity
from embrec.items import Recommendable
from embrec.models import Interaction, content_type_of
from embrec.registry import registry

UNTRAINED = "untrained"

#: Options handled by :class:`TrainedEncoder` itself.
COMMON_OPTIONS = frozenset({"model_dir", "kinds", "min_weight"})

#: One user's history: item tokens in time order, or ``(token, weight)`` pairs.
History = Sequence[str | tuple[str, float]]


def training_interactions(
    options: Mapping[str, Any], content_type_ids: Iterable[int] | None = None
):
    """The ``Interaction`` rows an encoder learns from, in each user's time order: weight above
    ``OPTIONS["min_weight"]`` (0), of ``OPTIONS["kinds"]`` when given, of the given content types
    (ties at one time ordered by content type and pk)."""
    qs = Interaction.objects.filter(weight__gt=float(options.get("min_weight", 0.0)))
    if content_type_ids is not None:
        qs = qs.filter(content_type_id__in=list(content_type_ids))
    kinds = options.get("kinds")
    if kinds:
        qs = qs.filter(kind__in=list(kinds))
    return qs.order_by("user_id", "created_at", "content_type_id", "object_pk", "id")


def alias_model_dir(options: Mapping[str, Any], alias: str) -> Path:
    """Where an encoder trained on interactions keeps its models: ``OPTIONS["model_dir"]``, else
    ``<BASE_DIR>/.embrec/models/<database name>``, then ``/<alias>``.

    One folder per database: a model trained on one database's interactions (say the test
    database) must not replace the one another database's vectors came from."""
    base = options.get("model_dir")
    if not base:
        root = getattr(settings, "BASE_DIR", None) or os.getcwd()
        database = connections["default"].settings_dict["NAME"]
        base = Path(root) / ".embrec" / "models" / str(database)
    return Path(base) / alias


@dataclass
class TrainingResult:
    """What one training run produced."""

    alias: str
    revision: str
    items: int
    sequences: int
    interactions: int
    path: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FittedModel:
    """What :meth:`TrainedEncoder.fit_model` returns: one row per token, plus extras to store.

    ``vectors`` are what gets stored in pgvector (already in the encoder's final form);
    ``support`` counts distinct users per token; ``arrays`` and ``meta`` are saved with them.
    """

    tokens: list[str]
    vectors: np.ndarray
    support: np.ndarray
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def item_token(content_type_id: int, object_pk: Any) -> str:
    """An item's key in a trained model's vocabulary: ``"<content type id>:<pk>"``."""
    return f"{int(content_type_id)}:{object_pk}"


def split_history(history: History) -> tuple[list[str], list[float]]:
    """``(tokens, weights)`` of one history; plain tokens weigh 1."""
    tokens, weights = [], []
    for entry in history:
        if isinstance(entry, tuple):
            tokens.append(str(entry[0]))
            weights.append(float(entry[1]))
        else:
            tokens.append(str(entry))
            weights.append(1.0)
    return tokens, weights


def support_counts(histories: Sequence[History]) -> dict[str, int]:
    """Distinct users per token."""
    counts: dict[str, int] = {}
    for history in histories:
        for token in set(split_history(history)[0]):
            counts[token] = counts.get(token, 0) + 1
    return counts


class TrainedEncoder(BaseEncoder):
    """Base class of encoders whose vectors come from a model trained on interactions.

    Hooks: :attr:`identity_name`, :data:`defaults` (training parameters and their defaults) and
    :meth:`fit_model`. The base class reads the interactions, fingerprints them, saves and loads
    the model, and serves stored vectors by item.
    """

    uses_text = False
    #: Name in the encoder identity (``"<name>@<revision>/<dims>/norm"``).
    identity_name = "trained"
    #: Training parameters with their defaults; ``OPTIONS`` override them.
    defaults: Mapping[str, Any] = {}
    #: Other options the subclass accepts besides :data:`defaults` and the common ones.
    extra_options: frozenset[str] = frozenset()

    def __init__(self, alias: str, **options):
        super().__init__(alias, **options)
        unknown = (
            set(options)
            - set(self.defaults)
            - COMMON_OPTIONS
            - set(self.extra_options)
            - INDEX_OPTION_NAMES
        )
        if unknown:
            raise ImproperlyConfigured(
                f"EMBREC['ENCODERS'][{alias!r}]['OPTIONS'] has unknown {self.identity_name} "
                f"option(s): {', '.join(sorted(unknown))}."
            )
        self._lock = threading.Lock()
        self._model: dict[str, Any] | None = None
        self._loaded_stamp: int | None = None
        self._meta: dict | None = None

    # -- configuration ----------------------------------------------------------------------

    @property
    def params(self) -> dict[str, Any]:
        """Training parameters: :data:`defaults` overridden by ``OPTIONS``."""
        return {k: self.options.get(k, v) for k, v in self.defaults.items()}

    @property
    def model_dir(self) -> Path:
        """Folder holding this alias's model (``<model_dir>/<alias>``)."""
        return alias_model_dir(self.options, self.alias)

    @property
    def meta_path(self) -> Path:
        return self.model_dir / "meta.json"

    @property
    def vectors_path(self) -> Path:
        return self.model_dir / "vectors.npz"

    # -- identity ---------------------------------------------------------------------------

    @property
    def identity(self) -> EncoderIdentity:
        # Re-read the model when another process retrained it: the revision changes and with it
        # the identity every stored vector is compared with.
        self._refresh()
        return super().identity

    def get_identity(self) -> EncoderIdentity:
        meta = self._meta or {}
        revision = meta.get("revision", UNTRAINED)
        dims = int(meta.get("dimensions", self.untrained_dimensions()))
        return EncoderIdentity(self.identity_name, revision, dims, True)

    def untrained_dimensions(self) -> int:
        """Dimensions reported before the first training."""
        return int(self.params.get("vector_size", self.params.get("factors", 0)) or 0)

    @property
    def is_trained(self) -> bool:
        self._refresh()
        return self._model is not None

    @property
    def meta(self) -> dict:
        """The stored model's ``meta.json`` (empty before training)."""
        self._refresh()
        return dict(self._meta or {})

    def _stamp(self) -> int | None:
        try:
            return self.meta_path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _refresh(self) -> None:
        stamp = self._stamp()
        if stamp == self._loaded_stamp and (stamp is None or self._model is not None):
            return
        with self._lock:
            stamp = self._stamp()
            if stamp is None:
                self._model, self._meta = None, None
            else:
                meta = json.loads(self.meta_path.read_text())
                data = np.load(self.vectors_path, allow_pickle=False)
                keys = [str(k) for k in data["keys"]]
                model = {name: data[name] for name in data.files if name != "keys"}
                model["vectors"] = model["vectors"].astype(np.float32)
                model["index"] = dict(zip(keys, range(len(keys)), strict=True))
                model["keys"] = keys
                self._model = model
                self._meta = meta
                self.on_load(model, meta)
            self._loaded_stamp = stamp
            self._identity = None

    def on_load(self, model: dict[str, Any], meta: dict) -> None:
        """Called (under the load lock) after a model was read; prepare caches here."""

    def model_arrays(self) -> dict[str, Any] | None:
        """The loaded model's arrays (``vectors``, ``support``, ``keys``, ``index`` …)."""
        self._refresh()
        return self._model

    # -- encoding ---------------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise ImproperlyConfigured(
            f"Encoder {self.alias!r} ({self.identity_name}) learns from interactions and cannot "
            "encode text; use a text encoder (or a hybrid with one) for search."
        )

    def vectors_for_tokens(self, tokens: Sequence[str]) -> list[np.ndarray | None]:
        """Stored vectors of item tokens (see :func:`item_token`); ``None`` for unknown items."""
        model = self.model_arrays()
        if model is None:
            return [None] * len(tokens)
        index, vectors = model["index"], model["vectors"]
        out: list[np.ndarray | None] = []
        for token in tokens:
            row = index.get(token)
            out.append(None if row is None else vectors[row])
        return out

    def support_for_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """Distinct training users per token (0 for items the model has not seen)."""
        model = self.model_arrays()
        out = np.zeros(len(tokens), dtype=np.float64)
        if model is None or "support" not in model:
            return out
        index, support = model["index"], model["support"]
        for n, token in enumerate(tokens):
            row = index.get(token)
            if row is not None:
                out[n] = float(support[row])
        return out

    def tokens_for(self, rec, objects: Sequence) -> list[str]:
        ct = content_type_of(rec.model)
        return [item_token(ct.id, obj.pk) if obj is not None else "" for obj in objects]

    def encode_objects(self, rec, objects: Sequence, texts: Sequence[str]) -> list:
        """Vectors of ``objects`` from the trained model; ``None`` for items it has not seen."""
        return self.vectors_for_tokens(self.tokens_for(rec, objects))

    # -- training ---------------------------------------------------------------------------

    def fit_model(self, histories: Sequence[History]) -> FittedModel:
        """Learn from ``histories`` (one per user, time order) in memory. Override."""
        raise NotImplementedError

    def histories_from_database(
        self, content_type_ids: Iterable[int] | None = None
    ) -> tuple[list[list[tuple[str, float]]], int]:
        """Each user's ``(item token, weight)`` pairs in time order, from the ``Interaction``
        table (interactions of one user at the same time are ordered by content type and pk).
        Returns ``(histories, number of interactions read)``."""
        rows = training_interactions(self.options, content_type_ids)
        histories: list[list[tuple[str, float]]] = []
        current_user = object()
        count = 0
        for user_id, ct_id, pk, weight in rows.values_list(
            "user_id", "content_type_id", "object_pk", "weight"
        ).iterator(chunk_size=5000):
            if user_id != current_user:
                histories.append([])
                current_user = user_id
            histories[-1].append((item_token(ct_id, pk), float(weight)))
            count += 1
        return histories, count

    def fingerprint(self, histories: Sequence[History]) -> str:
        """Revision of a model trained on ``histories`` with the current parameters."""
        digest = hashlib.sha1(
            json.dumps([self.identity_name, self.params], sort_keys=True, default=str).encode()
        )
        for history in histories:
            tokens, weights = split_history(history)
            digest.update("\x1f".join(tokens).encode())
            digest.update(np.asarray(weights, dtype=np.float32).tobytes())
            digest.update(b"\x1e")
        return digest.hexdigest()[:12]

    def train(
        self,
        histories: Sequence[History] | None = None,
        *,
        content_type_ids: Iterable[int] | None = None,
        recs: Sequence | None = None,
    ) -> TrainingResult:
        """Train on ``histories`` (default: the ``Interaction`` table) and save the model.

        ``recs`` (the registrations using this encoder) is passed on for encoders that also need
        the items' content. Training twice on the same data gives the same revision, so stored
        vectors stay current.
        """
        interactions = None
        if histories is None:
            histories, interactions = self.histories_from_database(content_type_ids)
        revision = self.fingerprint(histories)
        fitted = self.fit_model(histories)
        meta = {
            **fitted.meta,
            "revision": revision,
            "dimensions": int(fitted.vectors.shape[1]),
            "items": len(fitted.tokens),
            "sequences": len(histories),
            "interactions": interactions
            if interactions is not None
            else sum(len(h) for h in histories),
            "params": self.params,
        }
        self.save(fitted, meta)
        return TrainingResult(
            alias=self.alias,
            revision=revision,
            items=len(fitted.tokens),
            sequences=len(histories),
            interactions=int(meta["interactions"]),
            path=str(self.model_dir),
        )

    def save(self, fitted: FittedModel, meta: dict) -> None:
        """Write the model (vectors first, then meta: readers key on meta's mtime)."""
        folder = self.model_dir
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "keys": np.array(fitted.tokens, dtype=str),
            "vectors": np.asarray(fitted.vectors, dtype=np.float32),
            "support": np.asarray(fitted.support, dtype=np.float32),
            **fitted.arrays,
        }
        atomic_write(self.vectors_path, lambda fh: np.savez(fh, **arrays))
        atomic_write(self.meta_path, lambda fh: fh.write(json.dumps(meta, indent=2).encode()))
        self._loaded_stamp = None
        self._refresh()

    # -- user vectors -----------------------------------------------------------------------

    #: Whether user vectors use every interaction of the user (``True``) or the
    #: ``USER_VECTOR_MAX_INTERACTIONS`` most recent items (``False``, the mean of item vectors).
    profile_uses_all_items = False


def atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dependent_aliases(alias: str) -> set[str]:
    """``alias`` and every configured encoder that (directly or not) builds on it: hybrids that
    list it in ``parts``, adaptive hybrids that name it as ``behaviour`` or ``content``, reduced
    encoders that name it as ``base``."""
    found = {alias}
    changed = True
    while changed:
        changed = False
        for name, config in embrec_settings.ENCODERS.items():
            if name in found or not isinstance(config, dict):
                continue
            options = config.get("OPTIONS") or {}
            parts = options.get("parts") or []
            names = {p if isinstance(p, str) else p.get("encoder") for p in parts}
            names |= {options.get("behaviour"), options.get("content"), options.get("base")}
            if names & found:
                found.add(name)
                changed = True
    return found


def registrations_using(alias: str) -> list[Recommendable]:
    """Registrations that use ``alias`` directly or through a hybrid encoder."""
    aliases = dependent_aliases(alias)
    return [rec for rec in registry.all() if aliases & set(rec.get_encoders())]


def trained_aliases() -> list[str]:
    """Configured aliases whose class is a :class:`TrainedEncoder`, behaviour before the encoders
    built on them (an adaptive hybrid trains after its behavioural part)."""
    found = []
    for name, config in embrec_settings.ENCODERS.items():
        try:
            cls = import_string(str(config.get("CLASS", "")))
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, TrainedEncoder):
            found.append(name)
    # Dependencies first: an encoder goes after every trained encoder it depends on.
    ordered: list[str] = []
    pending = list(found)
    while pending:
        for name in list(pending):
            deps = {d for d in found if d != name and name in dependent_aliases(d)}
            if deps <= set(ordered):
                ordered.append(name)
                pending.remove(name)
        if pending and all(
            {d for d in found if d != n and n in dependent_aliases(d)} - set(ordered)
            for n in pending
        ):
            ordered.extend(pending)  # a cycle: the hybrid checks report it
            break
    return ordered
