"""Run methods over a split and collect metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embrec.evaluation.baselines import Method, similar_scores
from embrec.evaluation.metrics import (
    coherence,
    hub_share,
    next_item_hit_rate,
    paired_bootstrap,
    popularity_ratio,
    summarize,
    top_k,
)
from embrec.evaluation.metrics import per_user as per_user_metrics
from embrec.evaluation.split import Split

#: Seed of the random draws that break score ties in evaluations.
TIE_SEED = 12345


@dataclass
class MethodResult:
    """Metrics of one method on one split."""

    name: str
    description: str
    metrics: dict[str, float]
    fit_seconds: float
    score_seconds: float
    extra: dict = field(default_factory=dict)
    #: Per-user metric arrays aligned with the split's evaluated users (for paired intervals).
    per_user: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "metrics": self.metrics,
            "fit_seconds": round(self.fit_seconds, 3),
            "score_seconds": round(self.score_seconds, 3),
            **({"extra": self.extra} if self.extra else {}),
        }


def seen_items(split: Split, users: np.ndarray) -> list[np.ndarray]:
    """Training item indices of each user in ``users`` (excluded from their recommendations)."""
    m = split.train.matrix(binary=True)
    return [m.indices[m.indptr[u] : m.indptr[u + 1]] for u in users]


def evaluate_method(
    method: Method,
    split: Split,
    *,
    k: int = 10,
    batch_size: int = 256,
    fit: bool = True,
) -> MethodResult:
    """Fit ``method`` on ``split.train``, rank the catalog for each evaluated user (their training
    items excluded) and compute the metrics against their held-out items. ``fit=False`` reuses a
    method already fitted on this split's training part."""
    started = time.perf_counter()
    if fit:
        method.fit(split)
    fitted = time.perf_counter()
    method.candidates = split.candidates
    users = split.test_users
    seen = seen_items(split, users)
    if split.candidates is not None:
        # Only the split's candidates compete (the cold-start protocol ranks its cold items).
        outside = np.flatnonzero(~np.asarray(split.candidates, dtype=bool))
        seen = [np.union1d(s, outside) for s in seen]
    # Ties are broken at random, per user, with the same seeded draws for every method.
    rng = np.random.default_rng(TIE_SEED)
    tiebreak = rng.random((len(users), split.train.n_items), dtype=np.float32)
    recommended: list[np.ndarray] = []
    for lo in range(0, len(users), batch_size):
        batch = users[lo : lo + batch_size]
        scores = np.asarray(method.score(batch), dtype=np.float64)
        if scores.shape != (len(batch), split.train.n_items):
            raise ValueError(
                f"{method.name}: score() returned shape {scores.shape}, "
                f"expected {(len(batch), split.train.n_items)}"
            )
        recommended.extend(
            top_k(scores, k, seen[lo : lo + batch_size], tiebreak[lo : lo + batch_size])
        )
    relevant = [set(int(i) for i in items) for items in split.test_items]
    metrics = summarize(recommended, relevant, k, split.train.n_items)
    users_metrics = per_user_metrics(recommended, relevant, k)
    done = time.perf_counter()
    return MethodResult(
        name=method.name,
        description=method.description,
        metrics=metrics,
        fit_seconds=fitted - started,
        score_seconds=done - fitted,
        per_user=users_metrics,
    )


def evaluate(
    split: Split,
    methods: Sequence[Method],
    *,
    k: int = 10,
    progress: Callable[[str], None] | None = None,
) -> list[MethodResult]:
    """Evaluate each method on the same split; ``progress(name)`` is called after each."""
    results = []
    for method in methods:
        results.append(evaluate_method(method, split, k=k))
        if progress is not None:
            progress(method.name)
    return results


# ----------------------------------------------------------------------------- tuning


@dataclass
class Family:
    """A method and the configurations it may try on validation.

    ``make(params)`` builds a fresh :class:`Method` for one configuration; ``configs`` is the
    search space (one entry: a fixed configuration). ``baseline`` marks reference methods.
    """

    name: str
    make: Callable[[dict], Method]
    configs: list[dict]
    baseline: bool = False


@dataclass
class TunedResult:
    """A family's validation search and its single test evaluation."""

    name: str
    chosen: dict
    validation: list[tuple[dict, float]]
    test: MethodResult
    method: Method
    baseline: bool = False

    def as_dict(self, metric: str) -> dict:
        return {
            **self.test.as_dict(),
            "baseline": self.baseline,
            "chosen": self.chosen,
            "validation_" + metric: max(score for _, score in self.validation),
            "searched": [{"params": p, metric: round(v, 5)} for p, v in self.validation],
        }


def tune_and_test(
    family: Family,
    validation: Split,
    test: Split,
    *,
    k: int = 10,
    metric: str | None = None,
) -> TunedResult:
    """Try every configuration of ``family`` on ``validation`` (fitted on its training part),
    keep the best by ``metric`` (NDCG@K; the first wins ties), refit it on ``test.train`` and
    evaluate it once on the test part."""
    metric = metric or f"ndcg@{k}"
    if not family.configs:
        raise ValueError(f"{family.name}: no configuration to try")
    tried: list[tuple[dict, float]] = []
    for params in family.configs:
        result = evaluate_method(family.make(params), validation, k=k)
        tried.append((params, float(result.metrics[metric])))
    best = max(range(len(tried)), key=lambda n: (tried[n][1], -n))
    chosen = tried[best][0]
    method = family.make(chosen)
    final = evaluate_method(method, test, k=k)
    final.name = family.name
    return TunedResult(
        name=family.name,
        chosen=chosen,
        validation=tried,
        test=final,
        method=method,
        baseline=family.baseline,
    )


def compare_with_best(
    results: Sequence[TunedResult],
    metric: str,
    *,
    against: Sequence[str] | None = None,
    samples: int = 2000,
) -> dict:
    """Paired bootstrap intervals of each non-baseline's per-user ``metric`` minus that of the
    best baseline on test (among ``against`` when given, else all baselines)."""

    pool = [
        r
        for r in results
        if (r.name in against if against is not None else r.baseline) and r.test.per_user
    ]
    if not pool:
        return {}
    best = max(pool, key=lambda r: r.test.metrics[metric])
    out: dict[str, Any] = {"reference": best.name, "metric": metric, "methods": {}}
    for r in results:
        if r is best or r.baseline:
            continue
        out["methods"][r.name] = paired_bootstrap(
            r.test.per_user[metric], best.test.per_user[metric], samples=samples
        )
    return out


# ----------------------------------------------------------------------------- similar items


def similar_lists(method: Method, sources: np.ndarray, k: int, batch: int = 256) -> dict:
    """Top-``k`` similar items of each source (itself excluded) for a fitted method; ``{}`` when
    the method has no similar items."""

    lists: dict[int, list[int]] = {}
    for lo in range(0, len(sources), batch):
        chunk = sources[lo : lo + batch]
        scores = similar_scores(method, chunk)
        if scores is None:
            return {}
        scores = np.array(scores, dtype=np.float64)
        scores[np.arange(len(chunk)), chunk] = -np.inf
        ranked = top_k(scores, k)
        for row, source in enumerate(chunk):
            valid = ranked[row][np.isfinite(scores[row, ranked[row]])]
            lists[int(source)] = [int(i) for i in valid]
    return lists


def similar_items_report(
    method: Method,
    split: Split,
    *,
    k: int = 10,
    fields: Sequence[set] | None = None,
    famous: int = 0,
    labels: Sequence[str] | None = None,
    hubs: int = 20,
) -> dict:
    """Similar-items measures of a method fitted on ``split.train``.

    Sources are the items with a training interaction. Next-item pairs: each evaluated user's
    last training item and first held-out item. Hub share over the top ``hubs`` results;
    popularity ratio with training popularity; coherence over ``fields`` (sets per item).
    ``famous``: the lists of that many most popular items, as ``labels``.
    """

    train = split.train
    popularity = np.asarray(train.matrix(binary=True).sum(axis=0), dtype=np.float64).ravel()
    sources = np.flatnonzero(popularity > 0)
    lists = similar_lists(method, sources, k)
    if not lists:
        return {}
    sequences = train.sequences()
    pairs = [
        (sequences[u][-1], int(items[0]))
        for u, items in zip(split.test_users, split.test_items, strict=True)
        if sequences[u] and len(items)
    ]
    out: dict[str, Any] = {
        f"next_item_hit@{k}": next_item_hit_rate(lists, pairs),
        f"hub_share_top{hubs}": hub_share(list(lists.values()), top=hubs),
        "popularity_ratio": popularity_ratio(lists, popularity),
        "sources": int(len(sources)),
        "next_item_pairs": len(pairs),
    }
    if fields is not None:
        out["coherence"] = coherence(lists, fields)
    if famous:
        names = labels or train.items
        top = sources[np.argsort(-popularity[sources], kind="stable")][:famous]
        out["famous"] = {names[s]: [names[i] for i in lists.get(int(s), [])] for s in top}
    return out
