"""A text encoder fine-tuned on the site's interactions: content vectors that carry behaviour.

:class:`FinetunedEncoder` is a sentence-transformers encoder (MiniLM by default) whose weights are
fine-tuned on pairs of items that the same users consumed close together, with in-batch negatives
(sentence-transformers' ``MultipleNegativesRankingLoss``): the texts of co-consumed items are
pulled together, the other items of the batch pushed apart. Unlike item2vec it still reads only an
item's *text* when it encodes, so an item nobody has interacted with yet (a new product, a new
article) gets a vector that already reflects how similar items were consumed.

Training is explicit, like item2vec's: the ``embrec.finetune`` Celery task or
``manage.py embrec_finetune ALIAS``. It

1. reads the positive interactions (weight above ``min_weight``) of the registrations using the
   alias, each user's items in time order, and mines *pairs*: two distinct items within
   ``window`` positions of each other in a user's sequence, counted over users; the most frequent
   pairs are kept (ties by key), at most ``max_pairs_per_item`` per item so that a few popular
   items do not make up most of the data, and at most ``max_pairs`` in all;
2. fine-tunes the *base* model (never the previous fine-tune: the result depends only on the data
   and the parameters) for ``epochs`` passes over the pairs, batches without repeated items, AdamW
   with linear warm-up and decay, a fixed ``seed``; on CUDA when the process has it;
3. saves the model under ``<model_dir>/<alias>/<revision>/``, where the revision is a fingerprint
   of the pairs, their items' texts, the parameters and the base model, then points
   ``<model_dir>/<alias>/current.json`` at it; the encoder's identity carries the revision, so
   every stored vector of the alias becomes stale and the items are queued for re-embedding.

Until it is first trained the encoder encodes with the base model (revision ``untrained``).

Options (all optional; plus the :class:`SentenceTransformerEncoder` options ``device``,
``batch_size`` (encoding), ``engine``, ``dtype``, ``max_tokens``, ``chunk_size``, ``threads``):

* ``base_model`` — the model training starts from (default: the packaged all-MiniLM-L6-v2).
* ``model_dir`` — where models are stored (default ``<BASE_DIR>/.embrec/models/<database name>``).
* ``epochs`` (1), ``train_batch_size`` (64), ``learning_rate`` (1e-4), ``warmup_ratio`` (0.1),
  ``weight_decay`` (0.01), ``scale`` (20: the loss's inverse temperature), ``max_steps`` (None:
  no limit besides ``epochs``), ``max_seq_length`` (64 tokens), ``seed`` (1) — training.
* ``max_pairs`` (20,000), ``max_pairs_per_item`` (20), ``window`` (5), ``min_count`` (1: pairs
  seen for fewer users are dropped) — pair mining.
* ``kinds`` (interaction kinds used; default all), ``min_weight`` (0).
* ``train_device`` — device for training (default ``cuda`` when available, else CPU).
* ``keep_revisions`` — trained models kept on disk per alias (default 2: the current one and the
  one before, which workers still using it may be loading).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from embrec.encoders.base import INDEX_OPTION_NAMES, EncoderIdentity
from embrec.encoders.sentence_transformer import (
    SentenceTransformerEncoder,
    _model_revision,
    default_model_path,
)
from embrec.encoders.trained import alias_model_dir, registrations_using, training_interactions
from embrec.models import content_type_of
from embrec.registry import registry

logger = logging.getLogger("embrec")

#: Training and pair-mining parameters and their defaults (all part of the revision).
DEFAULT_PARAMS: dict[str, Any] = {
    "epochs": 1,
    "train_batch_size": 64,
    "learning_rate": 1e-4,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "scale": 20.0,
    "max_steps": None,
    "max_seq_length": 64,
    "seed": 1,
    "max_pairs": 20_000,
    "max_pairs_per_item": 20,
    "window": 5,
    "min_count": 1,
}

_OTHER_OPTIONS = {
    "base_model",
    "model_dir",
    "kinds",
    "min_weight",
    "train_device",
    "keep_revisions",
    "name",
    # SentenceTransformerEncoder's inference options.
    "device",
    "batch_size",
    "normalize",
    "engine",
    "dtype",
    "max_tokens",
    "chunk_size",
    "threads",
}

UNTRAINED = "untrained"
POINTER = "current.json"


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Check and coerce training parameters; raises ``ValueError`` naming the bad one."""
    out = {**DEFAULT_PARAMS, **params}
    ints = ("epochs", "train_batch_size", "max_seq_length", "seed", "max_pairs", "window")
    try:
        for key in ints:
            out[key] = int(out[key])
        out["max_pairs_per_item"] = int(out["max_pairs_per_item"])
        out["min_count"] = int(out["min_count"])
        if out["max_steps"] is not None:
            out["max_steps"] = int(out["max_steps"])
        for key in ("learning_rate", "warmup_ratio", "weight_decay", "scale"):
            out[key] = float(out[key])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad fine-tuning parameter: {exc}") from None
    for key in (*ints, "max_pairs_per_item", "min_count"):
        if key != "seed" and out[key] < 1:
            raise ValueError(f"{key} must be at least 1 (got {out[key]}).")
    if out["train_batch_size"] < 2:
        raise ValueError("train_batch_size must be at least 2 (in-batch negatives).")
    if out["max_steps"] is not None and out["max_steps"] < 1:
        raise ValueError(f"max_steps must be at least 1 (got {out['max_steps']}).")
    if not (out["learning_rate"] > 0 and math.isfinite(out["learning_rate"])):
        raise ValueError(f"learning_rate must be a positive number (got {out['learning_rate']}).")
    if not 0.0 <= out["warmup_ratio"] < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1) (got {out['warmup_ratio']}).")
    if out["scale"] <= 0:
        raise ValueError(f"scale must be positive (got {out['scale']}).")
    return out


# --------------------------------------------------------------------------- pair mining


def mine_pairs(
    sequences: Iterable[Sequence[str]],
    *,
    window: int = 5,
    max_pairs: int = 20_000,
    max_pairs_per_item: int = 20,
    min_count: int = 1,
) -> list[tuple[str, str, int]]:
    """Co-consumed item pairs ``(a, b, users)`` from users' time-ordered item sequences.

    Two distinct items form a pair when they are at most ``window`` positions apart in a user's
    sequence (repeats of an item keep its first position); ``users`` counts the users in whom they
    do. Pairs are taken most frequent first (ties by the keys), skipping a pair once either item
    already has ``max_pairs_per_item`` pairs, until ``max_pairs``. Within a pair ``a < b``.
    """
    counts: Counter[tuple[str, str]] = Counter()
    for sequence in sequences:
        seq = list(dict.fromkeys(str(s) for s in sequence))
        found: set[tuple[str, str]] = set()
        for i, a in enumerate(seq):
            for b in seq[i + 1 : i + 1 + window]:
                found.add((a, b) if a < b else (b, a))
        counts.update(found)
    ranked = sorted(
        ((pair, n) for pair, n in counts.items() if n >= min_count), key=lambda x: (-x[1], x[0])
    )
    per_item: Counter[str] = Counter()
    pairs: list[tuple[str, str, int]] = []
    for (a, b), n in ranked:
        if len(pairs) >= max_pairs:
            break
        if per_item[a] >= max_pairs_per_item or per_item[b] >= max_pairs_per_item:
            continue
        per_item[a] += 1
        per_item[b] += 1
        pairs.append((a, b, n))
    return pairs


def pair_batches(
    pairs: Sequence[tuple[str, str]], batch_size: int, rng: random.Random
) -> list[list[tuple[str, str]]]:
    """Shuffle ``pairs`` into batches in which no item appears twice.

    With in-batch negatives, a repeated item would be another pair's negative and its own
    positive at once. A pair that would repeat an item waits for a later batch; leftovers that
    can only form batches of one are dropped.
    """
    pending = list(pairs)
    rng.shuffle(pending)
    batches: list[list[tuple[str, str]]] = []
    while pending:
        batch: list[tuple[str, str]] = []
        used: set[str] = set()
        rest: list[tuple[str, str]] = []
        for pair in pending:
            if len(batch) < batch_size and pair[0] not in used and pair[1] not in used:
                batch.append(pair)
                used.update(pair)
            else:
                rest.append(pair)
        if len(batch) < 2:
            break
        batches.append(batch)
        pending = rest
    return batches


# --------------------------------------------------------------------------- training


@dataclass
class FitStats:
    """What one fine-tuning run did."""

    pairs: int
    steps: int
    epochs: int
    seconds: float
    device: str
    last_loss: float
    pairs_seen: int = 0

    @property
    def pairs_per_second(self) -> float:
        """Training pairs processed per second (each pair is two texts, forward and backward)."""
        return self.pairs_seen / self.seconds if self.seconds else 0.0


def fit_pairs(
    model,
    pairs: Sequence[tuple[str, str]],
    params: dict[str, Any],
    *,
    device: str | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> FitStats:
    """Fine-tune the ``SentenceTransformer`` ``model`` in place on text ``pairs``.

    ``MultipleNegativesRankingLoss`` in both directions (each text must pick its partner among the
    batch's other texts, and the other way round): pairs of co-consumed items are unordered.
    ``on_step(step, total_steps, loss)`` is called after each optimiser step.
    """
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.util import batch_to_device

    p = validate_params(params)
    if len(pairs) < 2:
        raise ValueError("fine-tuning needs at least two co-consumed item pairs.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    seed = p["seed"]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model.to(device)
    # Train on texts cut to max_seq_length tokens (cost grows with length); the model keeps its
    # own limit for encoding. Some modules (static embeddings) have no limit to set.
    original_length = getattr(model, "max_seq_length", None)
    _set_max_length(model, min(p["max_seq_length"], original_length or p["max_seq_length"]))
    loss_fn = MultipleNegativesRankingLoss(
        model,
        scale=p["scale"],
        directions=("query_to_doc", "doc_to_query"),
        partition_mode="per_direction",
    )
    epochs = [pair_batches(pairs, p["train_batch_size"], rng) for _ in range(p["epochs"])]
    total = sum(len(b) for b in epochs)
    if p["max_steps"]:
        total = min(total, p["max_steps"])
    if total < 1:
        raise ValueError("fine-tuning needs at least two pairs without a shared item.")
    decay = ("bias", "LayerNorm.weight", "layer_norm", "norm.weight")
    groups = [
        {
            "params": [w for n, w in model.named_parameters() if not any(d in n for d in decay)],
            "weight_decay": p["weight_decay"],
        },
        {
            "params": [w for n, w in model.named_parameters() if any(d in n for d in decay)],
            "weight_decay": 0.0,
        },
    ]
    optimizer = torch.optim.AdamW(groups, lr=p["learning_rate"])
    warmup = int(total * p["warmup_ratio"])

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    step, seen, loss_value = 0, 0, float("nan")
    started = time.monotonic()
    try:
        for batches in epochs:
            for batch in batches:
                if step >= total:
                    break
                features = [
                    batch_to_device(
                        model.preprocess([pair[col] for pair in batch]), torch.device(device)
                    )
                    for col in (0, 1)
                ]
                loss = loss_fn(features, None)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                seen += len(batch)
                loss_value = float(loss.detach())
                if on_step is not None:
                    on_step(step, total, loss_value)
    finally:
        model.eval()
        _set_max_length(model, original_length)
    return FitStats(
        pairs=len(pairs),
        steps=step,
        epochs=p["epochs"],
        seconds=time.monotonic() - started,
        device=str(device),
        last_loss=loss_value,
        pairs_seen=seen,
    )


def _set_max_length(model, value: int | None) -> None:
    if value is None:
        return
    try:
        model.max_seq_length = value
    except AttributeError:
        pass


def load_sentence_transformer(path: str, device: str | None = None):
    """``SentenceTransformer(path)`` offline, with a clear error when it cannot be loaded."""
    if os.path.isdir(path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImproperlyConfigured(
            "Fine-tuning needs the worker extras: pip install 'embrec[worker]'."
        ) from exc
    try:
        return SentenceTransformer(path, device=device or "cpu")
    except OSError as exc:
        raise ImproperlyConfigured(f"Could not load model {path!r}: {exc}") from exc


def finetune_texts(
    base_model: str,
    pairs: Sequence[tuple[str, str]],
    params: dict[str, Any],
    *,
    device: str | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
):
    """Load ``base_model`` and fine-tune it on text ``pairs``; returns ``(model, FitStats)``.

    Nothing is stored: evaluation uses this to fine-tune on a training split only.
    """
    model = load_sentence_transformer(base_model, device)
    stats = fit_pairs(model, pairs, params, device=device, on_step=on_step)
    return model, stats


@dataclass
class FinetuneResult:
    """What :meth:`FinetunedEncoder.train` produced."""

    alias: str
    revision: str
    previous_revision: str
    trained: bool
    pairs: int
    items: int
    interactions: int
    steps: int
    seconds: float
    pairs_per_second: float
    device: str
    path: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# --------------------------------------------------------------------------- the encoder


class FinetunedEncoder(SentenceTransformerEncoder):
    """A sentence-transformers encoder fine-tuned on co-consumed items (see the module docs)."""

    # What the embrec.E009 system check accepts: the training options as well as the inherited
    # inference ones.
    option_names = frozenset(DEFAULT_PARAMS) | frozenset(_OTHER_OPTIONS)

    def __init__(self, alias: str, **options):
        if "model" in options:
            raise ImproperlyConfigured(
                f"EMBREC['ENCODERS'][{alias!r}]: a fine-tuned encoder takes 'base_model', not "
                "'model' (the model it encodes with is the latest fine-tune)."
            )
        unknown = set(options) - set(DEFAULT_PARAMS) - _OTHER_OPTIONS - INDEX_OPTION_NAMES
        if unknown:
            raise ImproperlyConfigured(
                f"EMBREC['ENCODERS'][{alias!r}]['OPTIONS'] has unknown fine-tuning option(s): "
                f"{', '.join(sorted(unknown))}."
            )
        super().__init__(alias, **options)
        try:
            self._params = validate_params({k: options[k] for k in DEFAULT_PARAMS if k in options})
        except ValueError as exc:
            raise ImproperlyConfigured(f"EMBREC['ENCODERS'][{alias!r}]: {exc}") from None
        self._pointer_lock = threading.Lock()
        self._loaded_stamp: int | None = None
        self._current: dict | None = None

    # -- configuration ----------------------------------------------------------------------

    @property
    def params(self) -> dict[str, Any]:
        """Training parameters: :data:`DEFAULT_PARAMS` overridden by ``OPTIONS``."""
        return dict(self._params)

    @property
    def base_model(self) -> str:
        return self.options.get("base_model") or default_model_path()

    @property
    def model_dir(self) -> Path:
        """Folder holding this alias's fine-tuned models (``<model_dir>/<alias>``)."""
        return alias_model_dir(self.options, self.alias)

    @property
    def pointer_path(self) -> Path:
        return self.model_dir / POINTER

    @property
    def train_device(self) -> str:
        device = self.options.get("train_device")
        if device:
            return device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    # -- the current model ------------------------------------------------------------------

    def _stamp(self) -> int | None:
        try:
            return self.pointer_path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _refresh(self) -> None:
        """Follow ``current.json``: when another process trained a new revision, drop the loaded
        model so the next encode loads the new one."""
        stamp = self._stamp()
        if stamp == self._loaded_stamp:
            return
        with self._pointer_lock:
            stamp = self._stamp()
            if stamp == self._loaded_stamp:
                return
            current = json.loads(self.pointer_path.read_text()) if stamp is not None else None
            if current is not None and not (self.model_dir / current["revision"]).is_dir():
                raise ImproperlyConfigured(
                    f"Encoder {self.alias!r}: {self.pointer_path} names revision "
                    f"{current['revision']!r} but its folder is missing; retrain with "
                    f"manage.py embrec_finetune {self.alias}."
                )
            with self._model_lock:
                self._current = current
                self._model = None
                self._engine = None
                self._engine_failed = False
                self._identity = None
            self._loaded_stamp = stamp

    @property
    def current(self) -> dict | None:
        """The current training's metadata (``None`` before the first training)."""
        self._refresh()
        return self._current

    @property
    def revision(self) -> str:
        current = self.current
        return current["revision"] if current else UNTRAINED

    @property
    def model_path(self) -> str:
        current = self.current
        if current is None:
            return self.base_model
        return str(self.model_dir / current["revision"])

    @property
    def identity(self) -> EncoderIdentity:
        self._refresh()
        return super().identity

    def get_identity(self) -> EncoderIdentity:
        model = self.load_model()
        get_dims = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        base = self.base_model
        base_name = "all-MiniLM-L6-v2" if base == default_model_path() else Path(base).name
        name = self.options.get("name") or f"finetuned-{base_name}"
        return EncoderIdentity(
            name, self.revision, int(get_dims()), bool(self.options.get("normalize", True))
        )

    def load_model(self):
        self._refresh()
        return super().load_model()

    # -- training ---------------------------------------------------------------------------

    def revision_for(self, pairs: Sequence[tuple[str, str]], params: dict[str, Any]) -> str:
        """Fingerprint of the training texts, parameters and base model."""
        digest = hashlib.sha1()
        digest.update(json.dumps(params, sort_keys=True).encode())
        digest.update(_model_revision(self.base_model).encode())
        digest.update(str(self.base_model).encode())
        for a, b in pairs:
            digest.update(a.encode())
            digest.update(b"\x1f")
            digest.update(b.encode())
            digest.update(b"\x1e")
        return digest.hexdigest()[:12]

    def train_on_texts(
        self,
        pairs: Sequence[tuple[str, str]],
        params: dict[str, Any] | None = None,
        *,
        interactions: int = 0,
        items: int | None = None,
        force: bool = False,
        on_step: Callable[[int, int, float], None] | None = None,
    ) -> FinetuneResult:
        """Fine-tune the base model on text ``pairs`` and make it this alias's current model.

        ``params`` override the configured training parameters for this run (they are part of
        the revision). Training the same pairs with the same parameters again gives the same
        revision and does nothing (unless ``force``).
        """
        p = validate_params({**self.params, **(params or {})})
        pairs = [(str(a), str(b)) for a, b in pairs]
        revision = self.revision_for(pairs, p)
        previous = self.revision
        n_items = items if items is not None else len({t for pair in pairs for t in pair})
        folder = self.model_dir / revision
        if revision == previous and folder.is_dir() and not force:
            return FinetuneResult(
                self.alias, revision, previous, False, len(pairs), n_items, interactions,
                0, 0.0, 0.0, "", str(folder),
            )  # fmt: skip
        device = self.train_device
        model, stats = finetune_texts(self.base_model, pairs, p, device=device, on_step=on_step)
        self.model_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.model_dir, prefix=f".{revision}-"))
        try:
            model.save(str(staging), create_model_card=False)
            meta = {
                "revision": revision,
                "base_model": str(self.base_model),
                "params": p,
                "pairs": len(pairs),
                "items": n_items,
                "interactions": interactions,
                "steps": stats.steps,
                "seconds": round(stats.seconds, 3),
                "pairs_per_second": round(stats.pairs_per_second, 2),
                "device": stats.device,
                "trained_at": time.time(),
            }
            (staging / "embrec_training.json").write_text(json.dumps(meta, indent=2))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _atomic_write_text(self.pointer_path, json.dumps(meta, indent=2))
        self._loaded_stamp = None
        self._refresh()
        self._prune()
        return FinetuneResult(
            alias=self.alias,
            revision=revision,
            previous_revision=previous,
            trained=True,
            pairs=len(pairs),
            items=n_items,
            interactions=interactions,
            steps=stats.steps,
            seconds=stats.seconds,
            pairs_per_second=stats.pairs_per_second,
            device=stats.device,
            path=str(folder),
        )

    def _prune(self) -> None:
        keep = max(int(self.options.get("keep_revisions", 2)), 1)
        folders = [f for f in self.model_dir.iterdir() if f.is_dir() and not f.name.startswith(".")]
        folders.sort(key=lambda f: f.stat().st_mtime_ns, reverse=True)
        current = self.revision
        for folder in folders[keep:]:
            if folder.name != current:
                shutil.rmtree(folder, ignore_errors=True)

    def sequences_from_database(
        self, content_type_ids: Iterable[int] | None = None
    ) -> tuple[list[list[tuple[int, str]]], int]:
        """Each user's ``(content type id, pk)`` items in time order from the ``Interaction``
        table (positive interactions of the configured kinds); also the number read."""
        rows = training_interactions(self.options, content_type_ids)
        sequences: list[list[tuple[int, str]]] = []
        current_user = object()
        count = 0
        for user_id, ct_id, pk in rows.values_list(
            "user_id", "content_type_id", "object_pk"
        ).iterator(chunk_size=5000):
            if user_id != current_user:
                sequences.append([])
                current_user = user_id
            sequences[-1].append((ct_id, pk))
            count += 1
        return sequences, count

    def train(
        self,
        params: dict[str, Any] | None = None,
        *,
        registrations: Sequence | None = None,
        force: bool = False,
        on_step: Callable[[int, int, float], None] | None = None,
    ) -> FinetuneResult:
        """Mine co-consumed pairs from the ``Interaction`` table, fine-tune, save.

        ``registrations`` (default: those using this alias) limit which models' interactions and
        texts are used. Raises ``ValueError`` when there are no usable pairs.
        """
        p = validate_params({**self.params, **(params or {})})
        recs = list(registrations) if registrations is not None else registrations_using(self.alias)
        by_ct = {content_type_of(rec.model).id: rec for rec in recs} or {
            content_type_of(rec.model).id: rec for rec in registry.all()
        }
        sequences, interactions = self.sequences_from_database(by_ct)
        if not interactions:
            raise ValueError("there are no positive interactions to learn from.")
        token: dict[Any, str] = {}
        keyed = []
        for seq in sequences:
            keyed.append([token.setdefault(item, f"{item[0]}:{item[1]}") for item in seq])
        mined = mine_pairs(
            keyed,
            window=p["window"],
            max_pairs=p["max_pairs"],
            max_pairs_per_item=p["max_pairs_per_item"],
            min_count=p["min_count"],
        )
        wanted = {t for a, b, _ in mined for t in (a, b)}
        texts = _texts_for_tokens(wanted, by_ct)
        pairs = [(texts[a], texts[b]) for a, b, _ in mined if texts.get(a) and texts.get(b)]
        pairs = [(a, b) for a, b in pairs if a != b]
        if len(pairs) < 2:
            raise ValueError(
                "no co-consumed item pairs: fine-tuning needs users who interacted positively "
                "with two or more items that have text."
            )
        return self.train_on_texts(
            pairs,
            p,
            interactions=interactions,
            items=len({t for t in wanted if texts.get(t)}),
            force=force,
            on_step=on_step,
        )


def _texts_for_tokens(tokens: Iterable[str], by_ct: dict) -> dict[str, str]:
    """``"<ct>:<pk>"`` → the object's text, for objects still in their registration's queryset."""
    wanted: dict[int, list[str]] = {}
    for t in tokens:
        ct, _, pk = t.partition(":")
        wanted.setdefault(int(ct), []).append(pk)
    texts: dict[str, str] = {}
    for ct_id, pks in wanted.items():
        rec = by_ct.get(ct_id)
        if rec is None:
            continue
        for lo in range(0, len(pks), 1000):
            chunk = pks[lo : lo + 1000]
            objects = rec.get_queryset().in_bulk([rec.pk_from_string(pk) for pk in chunk])
            for pk, obj in objects.items():
                texts[f"{ct_id}:{pk}"] = rec.get_text(obj)
    return texts


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
