"""Run methods over a split and collect metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from embrec.evaluation.baselines import Method
from embrec.evaluation.metrics import summarize, top_k
from embrec.evaluation.split import Split


@dataclass
class MethodResult:
    """Metrics of one method on one split."""

    name: str
    description: str
    metrics: dict[str, float]
    fit_seconds: float
    score_seconds: float
    extra: dict = field(default_factory=dict)

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
) -> MethodResult:
    """Fit ``method`` on ``split.train``, rank the catalog for each evaluated user (their training
    items excluded) and compute the metrics against their held-out items."""
    started = time.perf_counter()
    method.fit(split)
    fitted = time.perf_counter()
    users = split.test_users
    seen = seen_items(split, users)
    recommended: list[np.ndarray] = []
    for lo in range(0, len(users), batch_size):
        batch = users[lo : lo + batch_size]
        scores = np.asarray(method.score(batch), dtype=np.float64)
        if scores.shape != (len(batch), split.train.n_items):
            raise ValueError(
                f"{method.name}: score() returned shape {scores.shape}, "
                f"expected {(len(batch), split.train.n_items)}"
            )
        recommended.extend(top_k(scores, k, seen[lo : lo + batch_size]))
    relevant = [set(int(i) for i in items) for items in split.test_items]
    metrics = summarize(recommended, relevant, k, split.train.n_items)
    done = time.perf_counter()
    return MethodResult(
        name=method.name,
        description=method.description,
        metrics=metrics,
        fit_seconds=fitted - started,
        score_seconds=done - fitted,
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
