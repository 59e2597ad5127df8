"""Vector arithmetic shared by the encoders, user vectors and the evaluation (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np


def l2_normalize(vectors: Any, dtype: Any = np.float32) -> np.ndarray:
    """Scale each row of ``vectors`` to unit length (all-zero rows stay zero), as ``dtype``.

    The division happens in the input's precision; only the result is cast.
    """
    vectors = np.asarray(vectors)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(dtype, copy=False)


def unit_vector(vector: Any, *, min_norm: float = 0.0) -> np.ndarray | None:
    """``vector`` scaled to unit length as float32; ``None`` when its norm is at most
    ``min_norm`` (no direction to keep)."""
    norm = float(np.linalg.norm(vector))
    if norm <= min_norm:
        return None
    return (np.asarray(vector) / norm).astype(np.float32)
