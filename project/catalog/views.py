"""The demo's pages: home (search, popular, "for you"), search results, a movie page, the
user switcher and like / dislike buttons.

Server-rendered, no JavaScript needed. Everything goes through embrec's public Python API
(``embrec.search``, ``embrec.similar``, ``embrec.recommend``, ``embrec.popular``,
``embrec.record_interaction``), as any host project would use it. Bad input answers 400, an unknown
or hidden movie 404, an action that needs a browsing user 403: never a 500.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST, require_safe

import embrec
from embrec.exceptions import InteractionError, NotEmbedded, QueryError
from project.catalog import browsing
from project.catalog.models import Movie

#: Cards per list.
LIST_SIZE = 8
#: The kinds the like / dislike buttons record.
BUTTON_KINDS = {"like", "dislike"}


def _for_you(request: HttpRequest, user, limit: int = LIST_SIZE):
    """Personal recommendations with their explanations (popular picks without history)."""
    if user is None:
        return []
    return embrec.recommend(user, model=Movie, limit=limit, request=request)


def _page(request, template: str, context: dict, status: int = 200) -> HttpResponse:
    context.setdefault("browsing_user", browsing.browsing_user(request))
    context["switcher"] = browsing.enabled()
    return render(request, template, context, status=status)


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    user = browsing.browsing_user(request)
    return _page(
        request,
        "catalog/home.html",
        {
            "browsing_user": user,
            "for_you": _for_you(request, user),
            "popular": embrec.popular(Movie, limit=LIST_SIZE, request=request, user=user),
        },
    )


@require_safe
def search(request: HttpRequest) -> HttpResponse:
    """Semantic search: the query is embedded with MiniLM and matched against every movie."""
    user = browsing.browsing_user(request)
    query = request.GET.get("q")
    context = {"browsing_user": user, "query": query or "", "results": None}
    if query is None:
        return _page(request, "catalog/search.html", context)
    try:
        context["results"] = embrec.search(
            query, model=Movie, limit=LIST_SIZE * 2, request=request, user=user
        )
    except QueryError as exc:
        context["error"] = _search_error(exc)
        return _page(request, "catalog/search.html", context, status=400)
    return _page(request, "catalog/search.html", context)


def _search_error(exc: QueryError) -> str:
    if exc.code == "empty_query":
        return "Type a few words to search for, e.g. “space adventure with robots”."
    return str(exc)


@require_safe
def movie_detail(request: HttpRequest, pk: int) -> HttpResponse:
    movie = get_object_or_404(_visible_movies(request), pk=pk)
    user = browsing.browsing_user(request)
    context = {"browsing_user": user, "movie": movie, "similar": [], "similar_state": None}
    try:
        context["similar"] = embrec.similar(movie, limit=LIST_SIZE, request=request, user=user)
    except NotEmbedded as exc:
        context["similar_state"] = exc.state
    # "For you" next to a movie leaves that movie out.
    for_you = _for_you(request, user, limit=5)
    context["for_you"] = [r for r in for_you if r.object.pk != movie.pk][:4]
    return _page(request, "catalog/movie.html", context)


def _visible_movies(request: HttpRequest):
    # The registration's visibility rule: unpublished movies are not shown anywhere.
    return embrec.registry.get(Movie).get_visible_queryset(request)


@require_POST
def browse_as(request: HttpRequest) -> HttpResponse:
    """Demo only: choose the MovieLens user to browse as (``user``: 42, ml42 or ``random``;
    ``action=stop`` stops). Never signs anybody in and never grants admin rights."""
    if not browsing.enabled():
        raise Http404("The user switcher is turned off.")
    next_url = _next_url(request)
    if request.POST.get("action") == "stop":
        browsing.stop(request)
        messages.info(request, "You are no longer browsing as a MovieLens user.")
        return HttpResponseRedirect(next_url)
    try:
        user = browsing.choose(request, request.POST.get("user", ""))
    except browsing.UnknownUser as exc:
        return _error(request, 400, str(exc))
    messages.success(request, f"You are now browsing as {user.get_username()}.")
    return HttpResponseRedirect(next_url)


@require_POST
def rate(request: HttpRequest, pk: int) -> HttpResponse:
    """Record a like or dislike of the movie by the browsing user, then go back."""
    movie = get_object_or_404(_visible_movies(request), pk=pk)
    user = browsing.browsing_user(request)
    if user is None:
        return _error(request, 403, "Choose a MovieLens user to browse as before rating movies.")
    kind = request.POST.get("kind", "")
    if kind not in BUTTON_KINDS:
        return _error(request, 400, "Rate a movie with “like” or “dislike”.")
    try:
        embrec.record_interaction(user, movie, kind)
    except InteractionError as exc:
        return _error(request, 400, str(exc))
    verb = "like" if kind == "like" else "don’t like"
    messages.success(
        request, f"Noted: you {verb} {movie}. Your recommendations “for you” are updated."
    )
    return HttpResponseRedirect(_next_url(request, default=movie))


def _error(request: HttpRequest, status: int, message: str) -> HttpResponse:
    """The error page of a POST: forms on it send the visitor back where they came from."""
    context = {"status": status, "message": message, "next_path": _next_url(request)}
    return _page(request, "catalog/error.html", context, status=status)


def _next_url(request: HttpRequest, default: Movie | None = None) -> str:
    """Where to go after a POST: ``next`` if it is a path on this site, else a safe default."""
    candidate = request.POST.get("next", "")
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    if default is not None:
        return reverse("catalog:movie", args=[default.pk])
    return reverse("catalog:home")
