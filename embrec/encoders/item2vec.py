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
  ``min_count`` (1), ``sample`` (0: no down-sampling of popular items), ``ns_exponent`` (0.75),
  ``alpha`` (0.025), ``seed`` (1), ``workers`` (1; more threads train faster but not bit-for-bit
  reproducibly) — word2vec parameters.
* ``model_dir`` — where models are stored (default ``<BASE_DIR>/.embrec/models/<database name>``).
* ``kinds`` — interaction kinds used for training (default: all).
* ``min_weight`` — interactions with weight at most this are ignored (default 0: dislikes and
  other negative signals are not co-consumption).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.core.exceptions import ImproperlyConfigured

from embrec.encoders.base import BaseEncoder, EncoderIdentity

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
}

UNTRAINED = "untrained"


def _stable_hash(value: str) -> int:
    # gensim seeds each vector with hashfxn(word + seed); Python's str hash is randomised per
    # process, which would make training irreproducible.
    return zlib.crc32(str(value).encode("utf-8"))


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


def item_token(content_type_id: int, object_pk: Any) -> str:
    """The word an item is in item2vec's vocabulary: ``"<content type id>:<pk>"``."""
    return f"{int(content_type_id)}:{object_pk}"


class Item2VecEncoder(BaseEncoder):
    """Item vectors from interaction sequences (see the module docstring for options)."""

    uses_text = False

    def __init__(self, alias: str, **options):
        super().__init__(alias, **options)
        unknown = set(options) - set(DEFAULT_PARAMS) - {"model_dir", "kinds", "min_weight"}
        if unknown:
            raise ImproperlyConfigured(
                f"EMBREC['ENCODERS'][{alias!r}]['OPTIONS'] has unknown item2vec option(s): "
                f"{', '.join(sorted(unknown))}."
            )
        self._lock = threading.Lock()
        self._vectors = None
        self._loaded_stamp: int | None = None
        self._meta: dict | None = None

    # -- configuration ----------------------------------------------------------------------

    @property
    def params(self) -> dict[str, Any]:
        """word2vec parameters: :data:`DEFAULT_PARAMS` overridden by ``OPTIONS``."""
        return {k: self.options.get(k, v) for k, v in DEFAULT_PARAMS.items()}

    @property
    def model_dir(self) -> Path:
        """Folder holding this alias's model (``<model_dir>/<alias>``)."""
        base = self.options.get("model_dir")
        if not base:
            from django.conf import settings
            from django.db import connections

            root = getattr(settings, "BASE_DIR", None) or os.getcwd()
            # One folder per database: a model trained on one database's interactions (say the
            # test database) must not replace the one another database's vectors came from.
            database = connections["default"].settings_dict["NAME"]
            base = Path(root) / ".embrec" / "models" / str(database)
        return Path(base) / self.alias

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
        dims = int(meta.get("dimensions", self.params["vector_size"]))
        return EncoderIdentity("item2vec", revision, dims, True)

    @property
    def is_trained(self) -> bool:
        self._refresh()
        return self._vectors is not None

    def _stamp(self) -> int | None:
        try:
            return self.meta_path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _refresh(self) -> None:
        stamp = self._stamp()
        if stamp == self._loaded_stamp and (stamp is None or self._vectors is not None):
            return
        with self._lock:
            stamp = self._stamp()
            if stamp is None:
                self._vectors, self._meta = None, None
            else:
                meta = json.loads(self.meta_path.read_text())
                data = np.load(self.vectors_path, allow_pickle=False)
                keys = [str(k) for k in data["keys"]]
                vectors = data["vectors"].astype(np.float32)
                self._vectors = (dict(zip(keys, range(len(keys)), strict=True)), vectors)
                self._meta = meta
            self._loaded_stamp = stamp
            self._identity = None

    # -- encoding ---------------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise ImproperlyConfigured(
            f"Encoder {self.alias!r} (item2vec) learns from interactions and cannot encode text; "
            "use a text encoder (or a hybrid with one) for search."
        )

    def vectors_for_tokens(self, tokens: Sequence[str]) -> list[np.ndarray | None]:
        """Unit vectors of item tokens (see :func:`item_token`); ``None`` for unknown items."""
        self._refresh()
        if self._vectors is None:
            return [None] * len(tokens)
        index, vectors = self._vectors
        out: list[np.ndarray | None] = []
        for token in tokens:
            row = index.get(token)
            out.append(None if row is None else vectors[row])
        return out

    def encode_objects(self, rec, objects: Sequence, texts: Sequence[str]) -> list:
        """Vectors of ``objects`` from the trained model; ``None`` for items it has not seen."""
        from django.contrib.contenttypes.models import ContentType

        ct = ContentType.objects.get_for_model(rec.model, for_concrete_model=False)
        return self.vectors_for_tokens(
            [item_token(ct.id, obj.pk) if obj is not None else "" for obj in objects]
        )

    # -- training ---------------------------------------------------------------------------

    def fit(self, sequences: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
        """Train on ``sequences`` of item tokens in memory; returns ``(tokens, unit vectors)``.

        Nothing is stored: evaluation uses this to train on the training split only.
        """
        wv = train_keyed_vectors(sequences, self.params)
        vectors = np.asarray(wv.vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return [str(k) for k in wv.index_to_key], vectors / norms

    def sequences_from_database(
        self, content_type_ids: Iterable[int] | None = None
    ) -> tuple[list[list[str]], int]:
        """Each user's item tokens in time order, read from the ``Interaction`` table.

        Interactions of the same user at the same time are ordered by content type and pk.
        Returns ``(sequences, number of interactions read)``.
        """
        from embrec.models import Interaction

        qs = Interaction.objects.filter(weight__gt=float(self.options.get("min_weight", 0.0)))
        if content_type_ids is not None:
            qs = qs.filter(content_type_id__in=list(content_type_ids))
        kinds = self.options.get("kinds")
        if kinds:
            qs = qs.filter(kind__in=list(kinds))
        rows = qs.order_by("user_id", "created_at", "content_type_id", "object_pk", "id")
        sequences: list[list[str]] = []
        current_user = object()
        count = 0
        for user_id, ct_id, pk in rows.values_list(
            "user_id", "content_type_id", "object_pk"
        ).iterator(chunk_size=5000):
            if user_id != current_user:
                sequences.append([])
                current_user = user_id
            sequences[-1].append(item_token(ct_id, pk))
            count += 1
        return sequences, count

    def train(
        self,
        sequences: Sequence[Sequence[str]] | None = None,
        *,
        content_type_ids: Iterable[int] | None = None,
    ) -> TrainingResult:
        """Train on ``sequences`` (default: the ``Interaction`` table) and save the model.

        The revision is a fingerprint of the sequences and parameters: training twice on the same
        data gives the same revision, so stored vectors stay current.
        """
        interactions = None
        if sequences is None:
            sequences, interactions = self.sequences_from_database(content_type_ids)
        sequences = [list(map(str, s)) for s in sequences]
        digest = hashlib.sha1(json.dumps(self.params, sort_keys=True).encode())
        for seq in sequences:
            digest.update("\x1f".join(seq).encode())
            digest.update(b"\x1e")
        revision = digest.hexdigest()[:12]
        tokens, vectors = self.fit(sequences)
        folder = self.model_dir
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "revision": revision,
            "dimensions": int(vectors.shape[1]),
            "items": len(tokens),
            "sequences": len(sequences),
            "interactions": interactions
            if interactions is not None
            else sum(len(s) for s in sequences),
            "params": self.params,
        }
        # Write vectors first, then meta (readers key on meta's mtime); both atomically.
        _atomic_write(
            self.vectors_path,
            lambda fh: np.savez(fh, keys=np.array(tokens, dtype=str), vectors=vectors),
        )
        _atomic_write(self.meta_path, lambda fh: fh.write(json.dumps(meta, indent=2).encode()))
        self._loaded_stamp = None
        self._refresh()
        return TrainingResult(
            alias=self.alias,
            revision=revision,
            items=len(tokens),
            sequences=len(sequences),
            interactions=int(meta["interactions"]),
            path=str(folder),
        )


def _atomic_write(path: Path, write) -> None:
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
    """``alias`` and every configured hybrid encoder that (directly or not) includes it."""
    from embrec.conf import embrec_settings

    found = {alias}
    changed = True
    while changed:
        changed = False
        for name, config in embrec_settings.ENCODERS.items():
            if name in found or not isinstance(config, dict):
                continue
            parts = (config.get("OPTIONS") or {}).get("parts") or []
            names = {p if isinstance(p, str) else p.get("encoder") for p in parts}
            if names & found:
                found.add(name)
                changed = True
    return found


def train_and_reindex(alias: str, *, reindex: bool = True) -> dict:
    """Train the item2vec encoder ``alias`` on the ``Interaction`` table; when its revision
    changed, queue every object of the registrations using it (directly or in a hybrid) for
    re-embedding under those aliases. Returns a summary dict."""
    from django.contrib.contenttypes.models import ContentType

    from embrec.encoders.loading import get_encoder
    from embrec.registry import registry

    encoder = get_encoder(alias)
    if not isinstance(encoder, Item2VecEncoder):
        raise ImproperlyConfigured(f"Encoder {alias!r} is not an item2vec encoder.")
    aliases = dependent_aliases(alias)
    users = [rec for rec in registry.all() if aliases & set(rec.get_encoders())]
    ct_ids = [
        ContentType.objects.get_for_model(r.model, for_concrete_model=False).id for r in users
    ]
    before = encoder.identity.revision
    result = encoder.train(content_type_ids=ct_ids or None)
    queued = 0
    if reindex and result.revision != before:
        from embrec import indexing

        for rec in users:
            for name in rec.get_encoders():
                if name in aliases:
                    queued += indexing.reindex(rec, encoder=name)
    return {**result.as_dict(), "previous_revision": before, "queued": queued}
