"""The embedding map: a 2-D projection of one encoder's vectors for a registered model.

:func:`build` samples at most ``max_points`` vectors (seeded, so the same vectors give the same
sample), projects them on their first two principal components (PCA through numpy's SVD) and
groups them with k-means (numpy, ``k`` small). The result is stored in Django's cache under
:func:`cache_key`, which names the model, the encoder, the identity of the newest vectors, their
count and their latest update: when vectors change, the key changes and the map is computed again.
The ``embrec.embedding_map`` task (:mod:`embrec.tasks`) runs :func:`build` on a worker; the admin's
map page reads :func:`cached`. Workers and web processes must share the cache (Redis, Memcached or
the database cache; the default local-memory cache is per process).

Points carry, besides their coordinates, the object's pk and name, its k-means cluster and the
values of the registration's colour fields (:attr:`embrec.Recommendable.map_fields`, default
``fields`` then ``filter_fields``): the first value of each (``"Action Comedy"`` → ``"Action"``).
Fields with more than :data:`MAX_DISTINCT` distinct values are left out.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
from django.core.cache import cache
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Count, Max

from embrec.items import Recommendable, resolve_field_path
from embrec.models import Embedding, content_type_of
from embrec.versions import live_identity

#: Default bound on the points of one map.
MAX_POINTS = 5000
#: Default number of k-means clusters.
CLUSTERS = 8
#: Colour fields with more distinct values than this are not offered.
MAX_DISTINCT = 20
#: How long a map stays cached (its key changes with the vectors anyway).
TIMEOUT = 24 * 3600

_SPLIT = re.compile(r"[,|;/\s]+")


def project(vectors: np.ndarray) -> np.ndarray:
    """The ``(n, 2)`` coordinates of ``vectors`` on their first two principal components (PCA).

    Deterministic: each component's sign is chosen so that its largest loading is positive.
    Coordinates are scaled into ``[0, 1]`` with one factor for both axes (distances keep their
    proportions). Fewer than two vectors, or vectors that are all equal, map to the centre.
    """
    x = np.asarray(vectors, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, 2))
    x = x - x.mean(axis=0)
    if n < 2 or not np.any(x):
        return np.full((n, 2), 0.5)
    # The SVD of the (dimensions × dimensions) scatter matrix gives the same components as that
    # of the data, in a time that does not grow with the number of points.
    _, s, vt = np.linalg.svd(x.T @ x)
    coords = np.zeros((n, 2))
    for c in range(min(2, len(s))):
        if s[c] <= s[0] * 1e-12:
            break
        sign = 1.0 if vt[c, np.argmax(np.abs(vt[c]))] >= 0 else -1.0
        coords[:, c] = x @ vt[c] * sign
    low = coords.min(axis=0)
    span = float((coords.max(axis=0) - low).max())
    if span <= 0:
        return np.full((n, 2), 0.5)
    scaled = (coords - low) / span
    # Centre the shorter axis.
    scaled += (1.0 - scaled.max(axis=0)) / 2
    return scaled


def kmeans(vectors: np.ndarray, k: int = CLUSTERS, seed: int = 0, iterations: int = 30):
    """Cluster labels (``0 … k-1``) of ``vectors``: k-means++ initialisation, seeded."""
    x = np.asarray(vectors, dtype=np.float64)
    n = x.shape[0]
    k = max(1, min(int(k), n))
    if n == 0:
        return np.zeros(0, dtype=int)
    rng = np.random.default_rng(seed)
    seeds = [x[rng.integers(n)]]
    d2 = ((x - seeds[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:
            break
        seeds.append(x[rng.choice(n, p=d2 / total)])
        d2 = np.minimum(d2, ((x - seeds[-1]) ** 2).sum(1))
    centres = np.array(seeds)
    labels = np.zeros(n, dtype=int)
    for _ in range(iterations):
        dist = (x**2).sum(1)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)[None]
        new = dist.argmin(axis=1)
        if _ and np.array_equal(new, labels):
            break
        labels = new
        for c in range(len(centres)):
            members = x[labels == c]
            if len(members):
                centres[c] = members.mean(axis=0)
    return labels


def _vectors(rec: Recommendable, encoder: str):
    ct = content_type_of(rec.model)
    rows = Embedding.objects.filter(content_type=ct, encoder=encoder)
    # The live version's vectors (what queries read); before any version is registered, the
    # newest identity's.
    identity = live_identity(encoder) or (
        rows.order_by("-updated_at", "-id").values_list("identity", flat=True).first()
    )
    return rows.filter(identity=identity or ""), identity or ""


def cache_key(rec: Recommendable, encoder: str, max_points: int = MAX_POINTS, seed: int = 0) -> str:
    """The cache key of the map as the stored vectors are now (one aggregate query)."""
    rows, identity = _vectors(rec, encoder)
    state = rows.aggregate(count=Count("id"), latest=Max("updated_at"))
    latest = state["latest"].isoformat() if state["latest"] else ""
    raw = f"{rec.label}|{encoder}|{identity}|{state['count']}|{latest}|{max_points}|{seed}"
    return "embrec:map:" + hashlib.sha256(raw.encode()).hexdigest()[:32]


def cached(rec: Recommendable, encoder: str, max_points: int = MAX_POINTS, seed: int = 0):
    """``(key, map or None)``: the map of the current vectors when it has been computed."""
    key = cache_key(rec, encoder, max_points, seed)
    return key, cache.get(key)


def _first_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, set)):
        value = next(iter(value), "")
    text = str(value).strip()
    parts = _SPLIT.split(text, maxsplit=1)
    return parts[0] if parts else ""


def color_fields(rec: Recommendable) -> list[str]:
    """Candidate colour fields: concrete fields (or paths) of the model, in order, unique."""
    names = list(getattr(rec, "map_fields", None) or [*rec.fields, *rec.filter_fields])
    out = []
    for name in names:
        if name in out:
            continue
        try:
            resolve_field_path(rec.model, name)
        except FieldDoesNotExist:
            continue
        out.append(name)
    return out


def build(
    rec: Recommendable,
    encoder: str,
    max_points: int = MAX_POINTS,
    seed: int = 0,
    clusters: int = CLUSTERS,
) -> dict:
    """Compute the map of ``rec``'s vectors under ``encoder``, cache it and return it."""
    key = cache_key(rec, encoder, max_points, seed)
    rows, identity = _vectors(rec, encoder)
    ids = np.array(list(rows.order_by("id").values_list("id", flat=True)), dtype=np.int64)
    total = len(ids)
    if total > max_points:
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=max_points, replace=False))
    pairs = []
    id_list = [int(i) for i in ids]
    for start in range(0, len(id_list), 1000):
        chunk = id_list[start : start + 1000]
        pairs += list(rows.filter(id__in=chunk).order_by("id").values_list("object_pk", "vector"))
    fields = color_fields(rec)
    pk_field = rec.model._meta.pk
    wanted = {}
    for object_pk, _ in pairs:
        try:
            wanted[object_pk] = pk_field.to_python(object_pk)
        except Exception:  # a pk the model no longer accepts: the object is gone
            continue
    objects = {
        str(pk): obj for pk, obj in rec.model._default_manager.in_bulk(wanted.values()).items()
    }
    values = {}
    if fields and objects:
        qs = rec.model._default_manager.filter(pk__in=list(wanted.values()))
        for row in qs.values("pk", *fields):
            values[str(row["pk"])] = {f: _first_value(row[f]) for f in fields}
    kept = [(pk, vec) for pk, vec in pairs if pk in objects]
    matrix = (
        np.vstack([np.asarray(v, dtype=np.float32) for _, v in kept])
        if kept
        else np.zeros((0, 1), dtype=np.float32)
    )
    coords = project(matrix)
    labels = kmeans(matrix, clusters, seed=seed)
    offered = [f for f in fields if len({v[f] for v in values.values()}) <= MAX_DISTINCT]
    points = []
    for (object_pk, _), (x, y), label in zip(kept, coords, labels, strict=True):
        row = values.get(object_pk, {})
        points.append(
            {
                "pk": object_pk,
                "name": str(objects[object_pk]),
                "x": round(float(x), 5),
                "y": round(float(y), 5),
                "cluster": int(label),
                "values": {f: row.get(f, "") for f in offered},
            }
        )
    result = {
        "model": rec.label,
        "encoder": encoder,
        "identity": identity,
        "total": total,
        "sampled": len(points),
        "fields": offered,
        "clusters": int(labels.max()) + 1 if len(labels) else 0,
        "points": points,
    }
    cache.set(key, result, TIMEOUT)
    return result
