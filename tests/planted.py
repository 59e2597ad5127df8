"""A small catalogue with planted structure, embedded with the hashing encoder.

Three groups of twelve articles, each written from its own eight words (every article a distinct
five-word draw, so no two are copies), one planted exact copy and one near copy inside the groups,
and one article of words no other article uses (the outlier).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from django.contrib.contenttypes.models import ContentType

from embrec import indexing
from embrec.models import Embedding
from embrec.storage import parse_vector
from tests.testapp.models import Article

GROUPS = {
    "fruit": "apple banana cherry mango peach plum grape lemon",
    "space": "rocket planet orbit comet galaxy nebula asteroid moon",
    "music": "guitar violin piano drums trumpet cello flute harp",
}
OUTLIER = "zebra quantum saxophone glacier umbrella volcano"


@dataclass
class Planted:
    groups: dict[str, list[Article]]
    copy: tuple[Article, Article]
    near: tuple[Article, Article]
    outlier: Article


def build() -> Planted:
    """Create and embed the catalogue (the outbox is drained in-process)."""
    groups: dict[str, list[Article]] = {}
    for name, words in GROUPS.items():
        draws = list(itertools.combinations(words.split(), 5))[::4][:12]
        groups[name] = [
            Article.objects.create(title=f"{name} {i}", body=" ".join(draw), category=name)
            for i, draw in enumerate(draws)
        ]
    original = groups["fruit"][0]
    copy = Article.objects.create(title=original.title, body=original.body, category="fruit")
    groups["fruit"].append(copy)
    source = groups["space"][3]
    near = Article.objects.create(
        title=source.title, body=source.body + " " + source.body.split()[0], category="space"
    )
    groups["space"].append(near)
    outlier = Article.objects.create(title="misc", body=OUTLIER, category="misc")
    indexing.drain()
    return Planted(groups, (original, copy), (source, near), outlier)


def exact_pairs(threshold: float) -> dict[tuple[str, str], float]:
    """Every pair of articles with cosine at least ``threshold``, by brute force."""
    ct = ContentType.objects.get_for_model(Article)
    rows = list(
        Embedding.objects.filter(content_type=ct, encoder="hashing").values_list(
            "object_pk", "vector"
        )
    )
    pks = [pk for pk, _ in rows]
    x = np.vstack([parse_vector(v) for _, v in rows])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    out = {}
    for i, j in zip(*np.triu_indices(len(pks), 1), strict=True):
        if sims[i, j] >= threshold:
            out[tuple(sorted((pks[i], pks[j])))] = float(sims[i, j])
    return out
