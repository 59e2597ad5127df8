"""The contract every encoder implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embrec.vectors import l2_normalize as l2_normalize  # re-exported for encoder modules

#: ``OPTIONS`` every encoder accepts: what the HNSW index of its vectors stores (``"index"``:
#: ``"vector"``, ``"halfvec"`` or ``"bit"``; ``"index_dimensions"``; ``"rerank"``; the older
#: ``"halfvec": True``), read by :func:`embrec.storage.index_options`, never by the encoder itself.
INDEX_OPTION_NAMES = frozenset({"index", "halfvec", "index_dimensions", "rerank"})


@dataclass(frozen=True)
class EncoderIdentity:
    """What produced a vector.

    Stored with every embedding: when any part changes (another model, another revision, other
    dimensions, normalisation switched), existing vectors are stale and get recomputed.
    """

    name: str
    revision: str
    dimensions: int
    normalized: bool

    def as_string(self) -> str:
        norm = "norm" if self.normalized else "raw"
        return f"{self.name}@{self.revision}/{self.dimensions}/{norm}"


class EncoderUnavailable(ConnectionError):
    """The encoder cannot work right now (a remote embedding service is down, overloaded or
    rejects the credentials), whatever the items: raised after the encoder's own retries.

    The write path does not blame the items for it: the batch is rolled back, its outbox rows stay
    pending without counting an attempt, and the drain task retries with backoff. The REST API
    answers 503 with ``Retry-After``.
    """


class BaseEncoder:
    """Base class for encoders.

    Subclasses set up their model lazily (the first call to :meth:`encode` or :attr:`identity`)
    so that importing or configuring an encoder costs nothing in processes that never encode.

    Hooks to override:

    * :meth:`get_identity` — name, revision, dimensions and normalisation of the vectors.
    * :meth:`encode_texts` — turn a list of strings into a ``float32`` array of shape
      ``(len(texts), dimensions)``.

    ``alias`` is the key under ``EMBREC["ENCODERS"]``; ``options`` is that entry's ``OPTIONS``.
    """

    #: Whether this encoder works from item text (``True``) or learns from interactions.
    uses_text: bool = True
    #: Whether a user's vector is built by :meth:`fold_in_user` (``True``) instead of the
    #: weighted mean of the vectors of the items they interacted with.
    folds_in_users: bool = False
    #: Whether user vectors read every interaction of the user (``True``) or only the
    #: ``EMBREC["USER_VECTOR_MAX_INTERACTIONS"]`` most recently touched items.
    profile_uses_all_items: bool = False

    #: Names of the ``OPTIONS`` this encoder reads. When set, ``manage.py check`` reports any
    #: other name (a typo would otherwise be ignored); ``None`` accepts any option.
    option_names: frozenset[str] | None = None

    def __init__(self, alias: str, **options):
        self.alias = alias
        self.options = options
        self._identity: EncoderIdentity | None = None

    @property
    def identity(self) -> EncoderIdentity:
        if self._identity is None:
            self._identity = self.get_identity()
        return self._identity

    @property
    def dimensions(self) -> int:
        return self.identity.dimensions

    def get_identity(self) -> EncoderIdentity:
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` into a ``(n, dimensions)`` ``float32`` array (public entry point)."""
        if len(texts) == 0:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = np.asarray(self.encode_texts(list(texts)), dtype=np.float32)
        if vectors.shape != (len(texts), self.dimensions):
            raise ValueError(
                f"Encoder {self.alias!r} returned shape {vectors.shape}, "
                f"expected {(len(texts), self.dimensions)}."
            )
        return vectors

    def encode_objects(
        self, rec: Any, objects: Sequence[Any], texts: Sequence[str]
    ) -> Sequence[np.ndarray | None] | np.ndarray:
        """Vectors for ``objects`` of registration ``rec``; the write path calls this hook.

        ``texts`` are the objects' :meth:`~embrec.Recommendable.get_text` values, in order.
        Return one entry per object: a ``(dimensions,)`` vector, or ``None`` when this encoder has
        no vector for that object (a behavioural encoder and an item nobody interacted with):
        the write path then stores no vector for it under this encoder, and does not count it as
        a failure. Default: :meth:`encode` on ``texts``. Override in encoders that do not work
        from text (``uses_text = False``) or that combine other encoders.
        """
        return self.encode(texts)

    def content_key(self, rec, obj, text: str) -> str:
        """What this encoder reads of ``obj``, as a string: the write path stores its hash with
        the vector and re-encodes the object when it changes. Default: the item text. Encoders
        that read more than the text (an image) add what identifies it (the file name).
        """
        return text

    def fold_in_user(self, rec, weights) -> np.ndarray | None:
        """A user's vector from ``{object pk: effective weight}`` (used when
        :attr:`folds_in_users`); ``None`` when the user has no usable vector. Encoders whose
        model has its own user representation (ALS) override this."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r}>"
