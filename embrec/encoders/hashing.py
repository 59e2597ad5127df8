"""A deterministic, dependency-free encoder for tests and quick experiments.

Each lower-cased word (and each word bigram) is hashed into one of ``dimensions`` buckets with a
sign; the bag is L2-normalised. Texts sharing words get similar vectors, so neighbour queries
behave sensibly, and the same text always gives the same vector on every machine.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from embrec.encoders.base import BaseEncoder, EncoderIdentity, l2_normalize

_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEncoder(BaseEncoder):
    """Options: ``dimensions`` (default 64), ``bigrams`` (default True)."""

    option_names = frozenset({"dimensions", "bigrams"})

    def get_identity(self) -> EncoderIdentity:
        dims = int(self.options.get("dimensions", 64))
        bigrams = bool(self.options.get("bigrams", True))
        return EncoderIdentity("hashing", "1+bigrams" if bigrams else "1", dims, True)

    @staticmethod
    def _bucket(token: str, dims: int) -> tuple[int, float]:
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % dims, 1.0 if (value >> 63) & 1 else -1.0

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        dims = self.dimensions
        bigrams = self.identity.revision.endswith("bigrams")
        out = np.zeros((len(texts), dims), dtype=np.float32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"HashingEncoder expects str, got {type(text).__name__}")
            words = _WORD.findall(text.lower())
            tokens = list(words)
            if bigrams:
                tokens += [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
            for token in tokens:
                index, sign = self._bucket(token, dims)
                out[row, index] += sign
        return l2_normalize(out)
