"""Clusters of a model's stored vectors, each named by its most typical items and terms.

:func:`find` groups the vectors of one registered model under one encoder:

1. **Fit** on a seeded sample of at most ``sample`` vectors (all of them when fewer), read in
   batches: spherical k-means (``method="kmeans"``: cosine k-means, k-means++ seeding, the best of
   ``restarts`` runs; numpy only) or HDBSCAN (``method="hdbscan"``: scikit-learn's
   :class:`~sklearn.cluster.HDBSCAN` on the sample's first ``reduce`` principal components,
   which finds the number of clusters itself and leaves points of no dense region as noise).
2. **Assign** every vector, read in batches by primary key (one batch in memory), to its nearest
   centroid by cosine similarity. With HDBSCAN, sampled vectors keep HDBSCAN's label and the
   others join the nearest cluster when they are no farther from its centroid than its farthest
   sampled member, else they are noise.
3. **Name** each cluster by its ``typical`` items nearest to the centroid and, for encoders that
   embed text, its most distinctive ``terms``: words of :meth:`~embrec.Recommendable.get_text`
   scored by their frequency in the cluster's items times their inverse document frequency over
   all items (a class-based tf-idf), among words more frequent inside the cluster than outside.

**Outliers** are the ``outliers`` items least similar to their nearest centroid: far from every
cluster (none when HDBSCAN found no cluster). Memory holds the rows' ids (8 bytes per vector),
the sample, one batch, the per-cluster term counts and the reported items. Clusters are
numbered by decreasing size; noise is cluster ``-1``.

``manage.py embrec_clusters`` prints the result; the admin's clusters page shows it (computed by the
``embrec.clusters`` task and cached, see :func:`build`).
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from embrec import analysis
from embrec.analysis import Target
from embrec.exceptions import AnalysisError

METHODS = ("kmeans", "hdbscan")
#: HDBSCAN's ways of selecting clusters from its hierarchy.
SELECTIONS = ("eom", "leaf")
#: Default number of k-means clusters.
CLUSTERS = 8
#: Default bound on the vectors the clustering is fitted on.
SAMPLE = 20000
#: Default number of principal components HDBSCAN runs on.
REDUCE = 10
#: Largest accepted number of clusters.
MAX_CLUSTERS = 500

_TOKEN = re.compile(r"[^\W_][\w'-]*[^\W_]", re.UNICODE)
STOP_WORDS = frozenset(
    """a an and are as at be but by for from has have in into is it its of on or that the their
    this to was were which with not no s""".split()
)


@dataclass
class Member:
    """One item of a cluster report: its pk, its name and its cosine similarity to a centroid."""

    pk: str
    name: str
    similarity: float
    cluster: int = 0


@dataclass
class Cluster:
    """One cluster: its number, size, most typical items and most distinctive terms."""

    label: int
    size: int
    typical: list[Member] = field(default_factory=list)
    terms: list[tuple[str, float]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """A short name: the top terms, else the most typical item."""
        if self.terms:
            return ", ".join(term for term, _ in self.terms[:3])
        return self.typical[0].name if self.typical else f"cluster {self.label}"


@dataclass
class Clustering:
    """The result of :func:`find`."""

    model: str
    encoder: str
    identity: str
    method: str
    total: int
    sampled: int
    clusters: list[Cluster]
    noise: int
    outliers: list[Member]
    params: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what the command's ``--json`` prints and the cache holds)."""
        data = asdict(self)
        for cluster, out in zip(self.clusters, data["clusters"], strict=True):
            out["name"] = cluster.name
            out["terms"] = [[term, round(score, 5)] for term, score in cluster.terms]
        return data


def hdbscan_available() -> bool:
    """Whether scikit-learn (and so ``method="hdbscan"``) is installed."""
    try:
        import sklearn.cluster  # noqa: F401
    except ImportError:
        return False
    return True


def tokens(text: str) -> set[str]:
    """The distinct lower-cased words and numbers of ``text`` of two characters or more, stop
    words left out (a year such as ``1995`` is a term)."""
    return {t for t in _TOKEN.findall(text.lower()) if t not in STOP_WORDS}


def spherical_kmeans(
    x: np.ndarray, k: int, *, seed: int = 0, restarts: int = 4, iterations: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """``(unit centroids (k, d), labels)`` of cosine k-means on the unit rows of ``x``.

    k-means++ seeding on cosine distance; each restart iterates until no label changes (or at most
    one in 10,000 does, at most ``iterations`` times); the run
    with the largest total similarity to the centroids wins. An emptied cluster is moved to the
    point farthest from its centroid. Deterministic for a given ``seed``.
    """
    x = analysis.normalize(x)
    n = len(x)
    k = max(1, min(int(k), n))
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(max(1, restarts)):
        centres = [int(rng.integers(n))]
        far = 1.0 - x @ x[centres[0]]
        for _c in range(1, k):
            weights = np.clip(far, 0, None) ** 2
            total = weights.sum()
            pick = int(rng.choice(n, p=weights / total)) if total > 0 else int(rng.integers(n))
            centres.append(pick)
            far = np.minimum(far, 1.0 - x @ x[pick])
        c = x[centres].copy()
        labels = np.full(n, -1)
        for _i in range(iterations):
            sims = x @ c.T
            new = sims.argmax(axis=1)
            if np.count_nonzero(new != labels) <= n // 10000:  # (almost) no label changed
                labels = new
                break
            labels = new
            best_sim = sims[np.arange(n), labels]
            sums, counts = _sums(x, labels, k)
            for j in np.flatnonzero(counts == 0):  # an emptied cluster takes the worst-fit point
                worst = int(best_sim.argmin())
                sums[j] = x[worst]
                labels[worst] = j
                best_sim[worst] = 1.0
            c = analysis.normalize(sums)
        score = float((x @ c.T)[np.arange(n), labels].sum())
        if best is None or score > best[0]:
            best = (score, c, labels)
    assert best is not None  # at least one restart ran
    return best[1], best[2]


def _sums(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster the sum of its rows and its size (one sort, ``O(n·d)``)."""
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, x.shape[1]), dtype=x.dtype)
    nonempty = counts > 0
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[nonempty]
    sums[nonempty] = np.add.reduceat(x[np.argsort(labels, kind="stable")], starts, axis=0)
    return sums, counts


def hdbscan_labels(
    x: np.ndarray, min_cluster_size: int, min_samples: int | None = None, selection: str = "eom"
) -> np.ndarray:
    """scikit-learn's HDBSCAN labels of the points ``x`` (Euclidean; ``-1``: noise).

    ``min_samples`` (default: ``min_cluster_size``) sets how conservative the density estimate
    is; ``selection`` is ``"eom"`` (the most persistent clusters: fewer, larger) or ``"leaf"``
    (the finest clusters of the hierarchy).
    """
    from sklearn.cluster import HDBSCAN

    model = HDBSCAN(
        min_cluster_size=max(2, int(min_cluster_size)),
        min_samples=int(min_samples) if min_samples else None,
        cluster_selection_method=selection,
        copy=True,
    )
    return model.fit_predict(np.asarray(x, dtype=np.float64))


def principal_components(x: np.ndarray, n: int) -> np.ndarray:
    """The coordinates of the rows of ``x`` on their first ``n`` principal components (numpy;
    the SVD of the ``d × d`` scatter matrix, so the cost grows with the rows only linearly)."""
    centred = np.asarray(x, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    _, _, vt = np.linalg.svd(centred.T @ centred)
    return centred @ vt[: max(1, min(int(n), vt.shape[0]))].T


def _clean(
    method: str,
    clusters: int,
    sample: int,
    min_cluster_size: int | None,
    min_samples: int | None,
    selection: str,
) -> None:
    if method not in METHODS:
        raise AnalysisError(f"method must be one of {', '.join(METHODS)}, not {method!r}.")
    if method == "hdbscan" and not hdbscan_available():
        raise AnalysisError(
            "method='hdbscan' needs scikit-learn (pip install scikit-learn); k-means needs nothing."
        )
    if not 1 <= int(clusters) <= MAX_CLUSTERS:
        raise AnalysisError(f"clusters must be between 1 and {MAX_CLUSTERS} (got {clusters}).")
    if int(sample) < 2:
        raise AnalysisError(f"sample must be at least 2 (got {sample}).")
    if min_cluster_size is not None and int(min_cluster_size) < 2:
        raise AnalysisError(f"min_cluster_size must be at least 2 (got {min_cluster_size}).")
    if min_samples is not None and int(min_samples) < 1:
        raise AnalysisError(f"min_samples must be at least 1 (got {min_samples}).")
    if selection not in SELECTIONS:
        raise AnalysisError(f"selection must be one of {', '.join(SELECTIONS)}, not {selection!r}.")


def _sample_ids(ids: np.ndarray, sample: int, seed: int) -> np.ndarray:
    if len(ids) <= sample:
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, size=sample, replace=False))


def find(
    model: Any,
    encoder: str | None = None,
    *,
    method: str = "kmeans",
    clusters: int = CLUSTERS,
    min_cluster_size: int | None = None,
    min_samples: int | None = None,
    selection: str = "eom",
    reduce: int = REDUCE,
    sample: int = SAMPLE,
    seed: int = 0,
    typical: int = 5,
    terms: int = 8,
    outliers: int = 20,
    batch_size: int = analysis.BATCH_SIZE,
) -> Clustering:
    """Cluster ``model``'s vectors under ``encoder`` (see the module documentation).

    ``model`` is a model class, an ``"app_label.model"`` label or a registration; ``clusters`` is
    k for k-means; ``min_cluster_size`` HDBSCAN's smallest cluster (default: 1 % of the sample,
    at least 5), ``min_samples`` and ``selection`` its other parameters (see
    :func:`hdbscan_labels`); HDBSCAN runs on the sample's first ``reduce`` principal components
    (``0``: on the unit vectors themselves; densities are hard to tell apart in hundreds of
    dimensions, where most items come out as noise). ``terms=0`` skips naming by terms (and loading the objects' text). Raises
    :class:`~embrec.exceptions.AnalysisError` for bad input or when there are no vectors.
    """
    _clean(method, clusters, sample, min_cluster_size, min_samples, selection)
    if int(reduce) < 0:
        raise AnalysisError(f"reduce must not be negative (got {reduce}).")
    tgt = analysis.target(model, encoder)
    all_ids = analysis.row_ids(tgt)
    total = len(all_ids)
    batches = list(analysis.iter_vectors(tgt, batch_size, ids=_sample_ids(all_ids, sample, seed)))
    sample_ids = [i for batch in batches for i in batch[0]]
    x = np.vstack([batch[2] for batch in batches])
    del batches
    if method == "kmeans":
        centroids, _ = spherical_kmeans(x, clusters, seed=seed)
        fitted: dict[int, int] = {}
        radius = None
        params: dict[str, Any] = {"clusters": int(clusters)}
    else:
        size = int(min_cluster_size or max(5, len(x) // 100))
        points = principal_components(x, reduce) if reduce else x
        labels = hdbscan_labels(points, size, min_samples, selection)
        del points
        found = sorted(set(labels.tolist()) - {-1})
        relabel = {old: new for new, old in enumerate(found)}
        labels = np.array([relabel.get(int(v), -1) for v in labels])
        fitted = {i: int(v) for i, v in zip(sample_ids, labels, strict=True)}
        if found:
            centroids = analysis.normalize(
                np.vstack([x[labels == j].sum(axis=0) for j in range(len(found))])
            )
            sims = x @ centroids.T
            radius = np.array([sims[labels == j, j].min() for j in range(len(found))])
        else:
            centroids, radius = np.zeros((0, x.shape[1]), dtype=np.float32), np.zeros(0)
        params = {
            "min_cluster_size": size,
            "min_samples": min_samples,
            "selection": selection,
            "reduce": int(reduce),
        }
    sampled = len(x)
    del x
    result = _assign(tgt, all_ids, centroids, fitted, radius, typical, terms, outliers, batch_size)
    return Clustering(
        model=tgt.label,
        encoder=tgt.encoder,
        identity=tgt.identity,
        method=method,
        total=total,
        sampled=sampled,
        params={**params, "sample": int(sample), "seed": int(seed)},
        **result,
    )


def _assign(
    tgt: Target,
    ids: np.ndarray,
    centroids: np.ndarray,
    fitted: dict[int, int],
    radius: np.ndarray | None,
    n_typical: int,
    n_terms: int,
    n_outliers: int,
    batch_size: int,
) -> dict[str, Any]:
    """One keyset pass over all vectors: sizes, typical items, outliers and term counts."""
    k = len(centroids)
    sizes: Counter[int] = Counter()
    typical: dict[int, list[tuple[float, str]]] = {j: [] for j in range(k)}
    far: list[tuple[float, str, int]] = []  # min-heap of (-similarity, pk, cluster)
    want_terms = n_terms > 0 and tgt.uses_text
    df_cluster: dict[int, Counter] = {j: Counter() for j in range(-1, k)}
    docs: Counter[int] = Counter()
    for row_ids, pks, vectors in analysis.iter_vectors(tgt, batch_size, ids=ids):
        if k:
            sims = vectors @ centroids.T
            nearest = sims.argmax(axis=1)
            best = sims[np.arange(len(pks)), nearest]
        else:
            nearest = np.full(len(pks), -1)
            best = np.zeros(len(pks))
        labels = []
        for row_id, pk, j, sim in zip(row_ids, pks, nearest.tolist(), best.tolist(), strict=True):
            if radius is not None:  # HDBSCAN: keep the fitted label, else join when close enough
                label = fitted.get(row_id, j if j >= 0 and sim >= radius[j] else -1)
            else:
                label = j
            labels.append(label)
            sizes[label] += 1
            if label >= 0:
                heap = typical[label]
                (heapq.heappush if len(heap) < n_typical else heapq.heappushpop)(heap, (sim, pk))
            if n_outliers and k:  # without clusters, no item is far from one
                entry = (-sim, pk, label)
                (heapq.heappush if len(far) < n_outliers else heapq.heappushpop)(far, entry)
        if want_terms:
            objects = analysis.load_objects(tgt.rec, pks)
            for pk, label in zip(pks, labels, strict=True):
                obj = objects.get(pk)
                if obj is None:
                    continue
                words = tokens(str(tgt.rec.get_text(obj)))
                docs[label] += 1
                df_cluster[label].update(words)
    named = _term_scores(df_cluster, docs, n_terms) if want_terms else {}
    order = sorted(range(k), key=lambda j: (-sizes[j], j))
    renumber = {old: new for new, old in enumerate(order)}
    renumber[-1] = -1
    shown = {pk for heap in typical.values() for _, pk in heap} | {pk for _, pk, _ in far}
    objects = analysis.load_objects(tgt.rec, shown)

    def member(pk: str, sim: float, label: int) -> Member:
        obj = objects.get(pk)
        name = str(obj) if obj is not None else f"#{pk} (gone)"
        return Member(pk, name, round(float(sim), 5), renumber[label])

    result = [
        Cluster(
            label=renumber[j],
            size=sizes[j],
            typical=[member(pk, sim, j) for sim, pk in sorted(typical[j], reverse=True)],
            terms=named.get(j, []),
        )
        for j in order
        if sizes[j]
    ]
    outliers = [member(pk, -neg, label) for neg, pk, label in sorted(far, reverse=True)]
    return {"clusters": result, "noise": sizes[-1], "outliers": outliers}


def _term_scores(
    df_cluster: dict[int, Counter], docs: Counter, n_terms: int
) -> dict[int, list[tuple[str, float]]]:
    """Per cluster the ``n_terms`` words with the highest class-based tf-idf.

    ``score = df_c(w) / n_c × log(N / df(w))``: the share of the cluster's items that contain the
    word, times its inverse document frequency over all items. Words in fewer than two of the
    cluster's items, or not more frequent inside the cluster than outside it, are left out.
    """
    total_docs = sum(docs.values())
    overall: Counter[str] = Counter()
    for counts in df_cluster.values():
        overall.update(counts)
    out: dict[int, list[tuple[str, float]]] = {}
    for label, counts in df_cluster.items():
        n_c = docs[label]
        if label < 0 or n_c == 0:
            continue
        rest = total_docs - n_c
        scored = []
        for word, df_c in counts.items():
            if df_c < min(2, n_c):
                continue
            inside = df_c / n_c
            outside = (overall[word] - df_c) / rest if rest else 0.0
            if inside <= outside:
                continue
            scored.append((inside * math.log(total_docs / overall[word]), word))
        scored.sort(key=lambda item: (-item[0], item[1]))
        out[label] = [(word, score) for score, word in scored[:n_terms] if score > 0]
    return out


# --------------------------------------------------------------------------- cached, for pages


def build(model: Any, encoder: str | None = None, **params: Any) -> dict[str, Any]:
    """:func:`find`, cached for the admin's page (:func:`embrec.analysis.build`, kind
    ``"clusters"``)."""
    return analysis.build("clusters", find, model, encoder, **params)
