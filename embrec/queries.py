"""The read path's Python API: similar items, personal recommendations, semantic search and
popularity (also importable from the package: ``embrec.similar`` …).

Each function validates its keyword arguments once into a
:class:`~embrec.read.options.QueryOptions`, computes the query's
:class:`~embrec.read.scope.Scope` (what the request may see, what is left out) and runs the
read pipeline (:mod:`embrec.read.pipeline`). Each returns a list of
:class:`~embrec.read.results.Result`; each result says where it came from (``source``). Bad input
raises :class:`~embrec.exceptions.QueryError`; see docs/READ_PATH.md for the layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models

from embrec.conf import embrec_settings
from embrec.read import pipeline
from embrec.read.options import QueryOptions
from embrec.read.results import Result
from embrec.read.scope import Scope, get_registration, request_user
from embrec.registry import registry

__all__ = ["popular", "recommend", "search", "similar"]


def similar(
    obj: models.Model,
    *,
    limit: int | None = None,
    encoder: str | None = None,
    request: Any = None,
    user: Any = None,
    filters: Mapping[str, Any] | None = None,
    exclude_seen: bool = False,
    mmr_lambda: float | None = None,
    popularity: float = 0.0,
    recency: float = 0.0,
    ef_search: int | None = None,
) -> list[Result]:
    """Objects most similar to ``obj`` (itself excluded), visible to ``request``.

    ``user`` (default: ``request.user``) never sees items they disliked, nor items they
    interacted with at all when ``exclude_seen``. ``filters`` are validated against
    ``filter_fields``; ``mmr_lambda`` (0–1) diversifies; ``popularity`` and ``recency`` (0–1,
    shares of the score) blend those in; ``encoder`` defaults to the registration's
    ``similar_encoder``. Raises :class:`embrec.NotRegistered`, :class:`embrec.NotEmbedded` (no
    vector yet) and :class:`embrec.QueryError` (bad input).
    """
    rec = registry.get(obj)
    options = QueryOptions.build(
        rec,
        limit=limit,
        filters=filters,
        mmr_lambda=mmr_lambda,
        popularity=popularity,
        recency=recency,
        exclude_seen=exclude_seen,
        ef_search=ef_search,
        encoder=encoder,
    )
    scope = Scope.build(rec, options, request=request, user=_user(user, request))
    return pipeline.similar(obj, scope, options)


def search(
    text: str,
    *,
    model: Any = None,
    limit: int | None = None,
    encoder: str | None = None,
    request: Any = None,
    user: Any = None,
    filters: Mapping[str, Any] | None = None,
    exclude_seen: bool = False,
    mmr_lambda: float | None = None,
    popularity: float = 0.0,
    recency: float = 0.0,
    ef_search: int | None = None,
) -> list[Result]:
    """Objects of ``model`` whose vectors are nearest to the encoded ``text``.

    The text is encoded in this process with the registration's ``search_encoder`` or first
    encoder that works from text (for a sentence-transformers encoder, the model loads on the
    first search). ``model`` (a model, instance or label) may be left out when only one model is
    registered. Other arguments as in :func:`similar`.
    """
    rec = get_registration(model)
    options = QueryOptions.build(
        rec,
        text=text if text is not None else "",
        limit=limit,
        filters=filters,
        mmr_lambda=mmr_lambda,
        popularity=popularity,
        recency=recency,
        exclude_seen=exclude_seen,
        ef_search=ef_search,
        encoder=encoder,
    )
    scope = Scope.build(rec, options, request=request, user=_user(user, request))
    return pipeline.search(scope, options)


def popular(
    model: Any = None,
    *,
    limit: int | None = None,
    request: Any = None,
    user: Any = None,
    filters: Mapping[str, Any] | None = None,
    exclude_seen: bool = False,
    encoder: str | None = None,
) -> list[Result]:
    """The most popular visible objects (most distinct users with a positive interaction within
    ``POPULARITY_WINDOW_DAYS``), topped up with the newest embedded objects (``"recent"``)."""
    rec = get_registration(model)
    options = QueryOptions.build(
        rec, limit=limit, filters=filters, exclude_seen=exclude_seen, encoder=encoder
    )
    scope = Scope.build(rec, options, request=request, user=_user(user, request))
    return pipeline.popular(scope, options)


def recommend(
    user: Any,
    *,
    model: Any = None,
    limit: int | None = None,
    encoder: str | None = None,
    request: Any = None,
    filters: Mapping[str, Any] | None = None,
    exclude_seen: bool = True,
    mmr_lambda: float | None = None,
    popularity: float | None = None,
    recency: float = 0.0,
    explain: bool = True,
    ef_search: int | None = None,
) -> list[Result]:
    """Personal recommendations for ``user`` among the visible objects of ``model``.

    Ranked by the user's vector (weighted, time-decayed mean of the vectors of interacted items;
    negative kinds subtract), excluding disliked items and, with ``exclude_seen`` (default),
    everything the user already interacted with. Each ``"personal"`` result carries an
    ``explanation``: the interacted items that contributed most. Anonymous users and users
    without a usable vector get :func:`popular` results; a short list is topped up with them.
    ``popularity`` defaults to ``EMBREC["RECOMMEND_POPULARITY"]``.
    """
    rec = get_registration(model)
    if popularity is None:
        popularity = embrec_settings.RECOMMEND_POPULARITY
    options = QueryOptions.build(
        rec,
        limit=limit,
        filters=filters,
        mmr_lambda=mmr_lambda,
        popularity=popularity,
        recency=recency,
        exclude_seen=exclude_seen,
        explain=explain,
        ef_search=ef_search,
        encoder=encoder,
    )
    scope = Scope.build(rec, options, request=request, user=user)
    return pipeline.recommend(scope, options)


def _user(user: Any, request: Any) -> Any:
    return user if user is not None else request_user(request)
