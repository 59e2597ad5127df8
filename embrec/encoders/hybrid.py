"""Hybrid encoder: one vector per item from several other encoders.

Typical use: content (MiniLM, GloVe) + behaviour (item2vec). Established items get both; new items
that nobody has interacted with yet have no behavioural part, and the hybrid falls back to their
content part, so they still get neighbours and can still be recommended::

    EMBREC = {"ENCODERS": {
        "default": {"CLASS": "embrec.encoders.sentence_transformer.SentenceTransformerEncoder"},
        "item2vec": {"CLASS": "embrec.encoders.item2vec.Item2VecEncoder"},
        "hybrid": {
            "CLASS": "embrec.encoders.hybrid.HybridEncoder",
            "OPTIONS": {"parts": [
                {"encoder": "default", "weight": 0.5},
                {"encoder": "item2vec", "weight": 1.0},
            ]},
        },
    }}

Options:

* ``parts`` — list of ``{"encoder": alias, "weight": float}`` (weight default 1.0); required.
* ``mode`` — ``"concat"`` (default): each part is L2-normalised, scaled by its weight and the
  parts are concatenated; the cosine of two hybrid vectors is then a weighted mix of the parts'
  cosines (squared weights). ``"sum"``: the weighted sum of the normalised parts (all parts must
  have the same dimensions). Either way the result is L2-normalised; a missing part is left out
  (zeros in concat mode).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
from django.core.exceptions import ImproperlyConfigured

from embrec.encoders.base import BaseEncoder, EncoderIdentity
from embrec.encoders.loading import get_encoder
from embrec.vectors import l2_normalize, unit_vector

MODES = ("concat", "sum")


def combine(
    parts: Sequence[Sequence[np.ndarray | None]],
    weights: Sequence[float],
    dims: Sequence[int],
    mode: str = "concat",
) -> list[np.ndarray | None]:
    """Combine per-part vectors (``parts[p][i]``: part ``p``'s vector of item ``i`` or ``None``).

    Returns one unit vector per item, or ``None`` where every part is missing.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    n = len(parts[0]) if parts else 0
    out: list[np.ndarray | None] = []
    for i in range(n):
        blocks: list[np.ndarray] = []
        present = False
        for part, weight, dim in zip(parts, weights, dims, strict=True):
            vector = part[i]
            if vector is None:
                blocks.append(np.zeros(dim, dtype=np.float32))
                continue
            vector = np.asarray(vector, dtype=np.float32)
            norm = float(np.linalg.norm(vector))
            if norm == 0.0:
                blocks.append(np.zeros(dim, dtype=np.float32))
                continue
            present = True
            blocks.append(vector * (float(weight) / norm))
        if not present:
            out.append(None)
            continue
        merged = np.concatenate(blocks) if mode == "concat" else np.sum(blocks, axis=0)
        out.append(unit_vector(merged))
    return out


def combine_matrices(
    matrices: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    weights: Sequence[float],
    mode: str = "concat",
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`combine` over aligned ``(n, d_p)`` matrices with ``has-vector`` masks."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    blocks = []
    for matrix, mask, weight in zip(matrices, masks, weights, strict=True):
        m = l2_normalize(np.asarray(matrix, dtype=np.float32)) * float(weight)
        m[~np.asarray(mask, dtype=bool)] = 0.0
        blocks.append(m)
    merged = np.concatenate(blocks, axis=1) if mode == "concat" else np.sum(blocks, axis=0)
    has = np.linalg.norm(merged, axis=1) > 0
    return l2_normalize(merged), has


class HybridEncoder(BaseEncoder):
    """Combines the vectors of other configured encoders (see the module docstring)."""

    def __init__(self, alias: str, **options):
        super().__init__(alias, **options)
        parts = options.get("parts")
        if not parts or not isinstance(parts, (list, tuple)):
            raise ImproperlyConfigured(
                f"EMBREC['ENCODERS'][{alias!r}]['OPTIONS']['parts'] must be a non-empty list of "
                "{'encoder': alias, 'weight': number}."
            )
        self.parts: list[tuple[str, float]] = []
        for part in parts:
            if isinstance(part, str):
                part = {"encoder": part}
            if not isinstance(part, dict) or "encoder" not in part:
                raise ImproperlyConfigured(
                    f"Hybrid encoder {alias!r}: each part needs an 'encoder' alias, got {part!r}."
                )
            if part["encoder"] == alias:
                raise ImproperlyConfigured(f"Hybrid encoder {alias!r} cannot include itself.")
            weight = float(part.get("weight", 1.0))
            if weight <= 0:
                raise ImproperlyConfigured(
                    f"Hybrid encoder {alias!r}: the weight of {part['encoder']!r} must be > 0."
                )
            self.parts.append((str(part["encoder"]), weight))
        self.mode = options.get("mode", "concat")
        if self.mode not in MODES:
            raise ImproperlyConfigured(
                f"Hybrid encoder {alias!r}: mode must be one of {', '.join(MODES)}."
            )

    def part_encoders(self) -> list[BaseEncoder]:
        return [get_encoder(name) for name, _ in self.parts]

    @property
    def uses_text(self) -> bool:  # type: ignore[override]
        return any(encoder.uses_text for encoder in self.part_encoders())

    @property
    def identity(self) -> EncoderIdentity:
        # Never cached: a part's revision changes when it is retrained (item2vec), and that must
        # mark the hybrid's vectors stale too.
        return self.get_identity()

    def get_identity(self) -> EncoderIdentity:
        encoders = self.part_encoders()
        dims = [encoder.dimensions for encoder in encoders]
        if self.mode == "sum" and len(set(dims)) > 1:
            raise ImproperlyConfigured(
                f"Hybrid encoder {self.alias!r} in 'sum' mode needs parts of equal dimensions, "
                f"got {dims}; use mode 'concat'."
            )
        described = [
            [name, weight, encoder.identity.as_string()]
            for (name, weight), encoder in zip(self.parts, encoders, strict=True)
        ]
        revision = hashlib.sha1(json.dumps([self.mode, described]).encode()).hexdigest()[:12]
        total = sum(dims) if self.mode == "concat" else dims[0]
        return EncoderIdentity("hybrid", revision, total, True)

    def encode_objects(self, rec, objects: Sequence, texts: Sequence[str]) -> list:
        encoders = self.part_encoders()
        parts = [list(encoder.encode_objects(rec, objects, texts)) for encoder in encoders]
        return combine(
            parts,
            [w for _, w in self.parts],
            [e.dimensions for e in encoders],
            self.mode,
        )

    def content_key(self, rec, obj, text: str) -> str:
        """Every part's :meth:`~embrec.encoders.base.BaseEncoder.content_key`: the hybrid
        re-encodes when what any part reads changes (an image part's file, say)."""
        keys = [encoder.content_key(rec, obj, text) for encoder in self.part_encoders()]
        if all(key == text for key in keys):
            return text  # text parts only: the same hash as before image parts existed
        return json.dumps(keys)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text queries (search): text parts encode the text; other parts contribute nothing."""
        encoders = self.part_encoders()
        if not any(e.uses_text for e in encoders):
            raise ImproperlyConfigured(
                f"Hybrid encoder {self.alias!r} has no text part and cannot encode text."
            )
        parts = []
        for encoder in encoders:
            if encoder.uses_text:
                parts.append(list(encoder.encode(texts)))
            else:
                parts.append([None] * len(texts))
        combined = combine(
            parts, [w for _, w in self.parts], [e.dimensions for e in encoders], self.mode
        )
        return np.stack(
            [v if v is not None else np.zeros(self.dimensions, np.float32) for v in combined]
        )
