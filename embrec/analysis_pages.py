"""The admin's clusters and duplicates pages: parameters, permission, cached results.

Each page names a registered model in its URL and takes its parameters from the query string
(``encoder``; ``method`` and ``k`` for clusters; ``threshold`` and ``neighbours`` for duplicates).
The result of the current vectors comes from Django's cache (:func:`embrec.analysis.cached`);
when it is not there, the ``embrec.clusters`` / ``embrec.duplicates`` task is queued (once per
vectors' state and parameters every 5 minutes) and the page says it is being computed and reloads.
Workers and web processes must share the cache, as for the embedding map.

Unknown model: 404; no view (or change) permission on the model: 403; a bad parameter: 400.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django.core.cache import cache
from django.core.exceptions import BadRequest, PermissionDenied
from django.http import Http404, HttpRequest
from django.urls import NoReverseMatch, reverse

from embrec import analysis, clusters, dispatch, duplicates
from embrec.exceptions import AnalysisError
from embrec.items import Recommendable
from embrec.registry import NotRegistered, registry

#: How long a queued computation suppresses queueing it again (seconds).
QUEUED_FOR = 300


def _registration(request: HttpRequest, label: str) -> Recommendable:
    try:
        rec = registry.get(label)
    except NotRegistered as exc:
        raise Http404("Not a registered model.") from exc
    opts = rec.model._meta
    if not (
        request.user.has_perm(f"{opts.app_label}.view_{opts.model_name}")
        or request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")
    ):
        raise PermissionDenied
    return rec


def _int(request: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    raw = request.GET.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, not {raw!r}.") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, not {value}.")
    return value


def _encoder(request: HttpRequest, rec: Recommendable) -> tuple[str, list[str]]:
    encoders = rec.get_encoders()
    encoder = request.GET.get("encoder") or (encoders[0] if encoders else "")
    if encoder not in encoders:
        raise BadRequest(f"{rec.label} uses the encoders {', '.join(encoders)}, not {encoder!r}.")
    return encoder, encoders


def change_url(rec: Recommendable, pk: str) -> str:
    """The admin change page of the object ``pk`` (``""`` when the model has no admin)."""
    opts = rec.model._meta
    try:
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=["__pk__"])
    except NoReverseMatch:
        return ""
    return url.replace("__pk__", quote(str(pk), safe=""))


def _result(kind: str, task: str, rec: Recommendable, encoder: str, params: dict) -> dict[str, Any]:
    """``result`` (or ``None`` while computing) and ``error`` for the page."""
    try:
        tgt = analysis.target(rec, encoder)
    except AnalysisError as exc:
        return {"result": None, "error": str(exc)}
    key, result = analysis.cached(kind, tgt, params)
    if result is None and cache.add(f"{key}:queued", True, QUEUED_FOR):
        try:
            dispatch.publish(task, [rec.label, encoder, params])
        except Exception as exc:  # broker down: say so, let the next visit try again
            cache.delete(f"{key}:queued")
            return {"result": None, "error": f"Could not queue the computation: {exc}"}
        key, result = analysis.cached(kind, tgt, params)  # eager mode: already there
    if result is not None and result.get("error"):
        return {"result": None, "error": result["error"]}
    return {"result": result, "error": ""}


def clusters_context(request: HttpRequest, label: str) -> dict[str, Any]:
    """The clusters page's context: clusters with linked typical items, and outliers."""
    rec = _registration(request, label)
    encoder, encoders = _encoder(request, rec)
    method = request.GET.get("method") or "kmeans"
    if method not in clusters.METHODS:
        raise BadRequest(f"method must be one of {', '.join(clusters.METHODS)}.")
    params: dict[str, Any] = {"method": method}
    if method == "kmeans":
        params["clusters"] = _int(request, "k", clusters.CLUSTERS, 1, 100)
    else:
        params["min_cluster_size"] = _int(request, "min_cluster_size", 10, 2, 100000)
        params["selection"] = request.GET.get("selection") or "eom"
        if params["selection"] not in clusters.SELECTIONS:
            raise BadRequest(f"selection must be one of {', '.join(clusters.SELECTIONS)}.")
    available = clusters.hdbscan_available()
    state: dict[str, Any]
    if method == "hdbscan" and not available:
        state = {"result": None, "error": "HDBSCAN needs scikit-learn, which is not installed."}
    else:
        state = _result("clusters", dispatch.CLUSTERS, rec, encoder, params)
    result = state["result"]
    if result is not None:
        for cluster in result["clusters"]:
            for member in cluster["typical"]:
                member["url"] = change_url(rec, member["pk"])
        for member in result["outliers"]:
            member["url"] = change_url(rec, member["pk"])
    return {
        "title": f"Clusters of {rec.model._meta.verbose_name_plural} ({encoder})",
        "label": rec.label,
        "encoder": encoder,
        "encoders": encoders,
        "method": method,
        "methods": [m for m in clusters.METHODS if m == "kmeans" or available],
        "k": params.get("clusters", clusters.CLUSTERS),
        "min_cluster_size": params.get("min_cluster_size", 10),
        "selection": params.get("selection", "eom"),
        "selections": clusters.SELECTIONS,
        **state,
    }


def duplicates_context(request: HttpRequest, label: str) -> dict[str, Any]:
    """The duplicates page's context: linked near-duplicate pairs and isolated items."""
    rec = _registration(request, label)
    encoder, encoders = _encoder(request, rec)
    try:
        threshold = duplicates.clean_threshold(request.GET.get("threshold") or duplicates.THRESHOLD)
    except AnalysisError as exc:
        raise BadRequest(str(exc)) from None
    neighbours = _int(request, "neighbours", duplicates.NEIGHBOURS, 1, 100)
    params = {"threshold": threshold, "neighbours": neighbours}
    state = _result("duplicates", dispatch.DUPLICATES, rec, encoder, params)
    result = state["result"]
    if result is not None:
        items = [item for pair in result["pairs"] for item in (pair["a"], pair["b"])]
        for row in result["isolated"]:
            items += [row["item"], row["neighbour"]]
        for item in items:
            item["url"] = change_url(rec, item["pk"])
    return {
        "title": f"Near-duplicates of {rec.model._meta.verbose_name_plural} ({encoder})",
        "label": rec.label,
        "encoder": encoder,
        "encoders": encoders,
        "threshold": threshold,
        "neighbours": neighbours,
        **state,
    }
