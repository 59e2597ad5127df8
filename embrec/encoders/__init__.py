"""Encoders turn item text into vectors.

Each encoder is configured under an alias in ``EMBREC["ENCODERS"]`` and loaded once per process
by :func:`embrec.encoders.get_encoder`. Heavy libraries (torch, sentence-transformers) are only
imported by the encoder modules that need them, the first time such an encoder is used.
"""

from embrec.encoders.base import BaseEncoder, EncoderIdentity, EncoderUnavailable
from embrec.encoders.loading import get_encoder, get_versioned_encoder, reset_encoders

__all__ = [
    "BaseEncoder",
    "EncoderIdentity",
    "EncoderUnavailable",
    "get_encoder",
    "get_versioned_encoder",
    "reset_encoders",
]
