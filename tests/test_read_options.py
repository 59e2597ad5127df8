"""Query options are validated once, into one QueryOptions, by the Python API or by the API's
parameter serializers (which also document the parameters); visibility is computed once."""

import inspect

import pytest
from django.http import QueryDict
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

import embrec
from embrec import queries
from embrec.api import schema as openapi
from embrec.api.params import (
    PopularParams,
    RecommendationParams,
    SearchParams,
    SimilarParams,
)
from embrec.exceptions import QueryError
from embrec.interactions import record_interaction
from embrec.read.options import QueryOptions
from tests.readpath import make_catalog, make_user
from tests.testapp.models import Article

BASE = "/api/embrec"


def test_public_functions_have_real_signatures():
    for name in ("similar", "recommend", "search", "popular"):
        function = getattr(embrec, name)
        assert function is getattr(queries, name)
        parameters = inspect.signature(function).parameters
        assert {"limit", "request", "filters", "exclude_seen", "encoder"} <= set(parameters)
        assert function.__doc__
    assert "mmr_lambda" in inspect.signature(embrec.similar).parameters
    assert embrec.Result.__name__ == "Result"
    with pytest.raises(AttributeError):
        embrec.no_such_name  # noqa: B018


@pytest.mark.django_db
def test_build_validates_everything_once():
    rec = embrec.registry.get(Article)
    options = QueryOptions.build(
        rec, limit="5", filters={"category": "scifi"}, mmr_lambda="0.5", exclude_seen="yes"
    )
    assert (options.limit, options.mmr_lambda, options.exclude_seen) == (5, 0.5, True)
    assert options.reranks and Article.objects.filter(options.filters).query.where
    assert not QueryOptions.build(rec).reranks
    for kwargs, field in [
        ({"limit": 0}, "limit"),
        ({"popularity": 0.7, "recency": 0.7}, "popularity"),
        ({"filters": {"title": "x"}}, "title"),
        ({"exclude_seen": "maybe"}, "exclude_seen"),
        ({"ef_search": "many"}, "ef_search"),
        ({"ef_search": 0}, "ef_search"),
        ({"text": "  "}, "q"),
    ]:
        with pytest.raises(QueryError) as info:
            QueryOptions.build(rec, **kwargs)
        assert info.value.field == field, kwargs


@pytest.mark.django_db
def test_parameter_serializers_give_the_same_options():
    rec = embrec.registry.get(Article)
    query = QueryDict("limit=5&mmr_lambda=0.5&category=scifi&price__gte=10&format=json")
    options = SimilarParams.parse(query, rec)
    assert options == QueryOptions.build(
        rec, limit=5, mmr_lambda=0.5, filters={"category": "scifi", "price__gte": "10"}
    )
    defaults = RecommendationParams.parse(QueryDict(""), rec)
    assert defaults.exclude_seen is True and defaults.explain is True
    assert defaults.popularity == embrec.conf.embrec_settings.RECOMMEND_POPULARITY
    assert PopularParams.parse(QueryDict("limit="), rec).limit == 10
    assert SearchParams.parse(QueryDict("q=+robots+"), rec).text == "robots"
    # Parameters an endpoint does not take are neither validated nor filters.
    assert PopularParams.parse(QueryDict("mmr_lambda=9&q="), rec).mmr_lambda is None
    with pytest.raises(QueryError) as info:
        SimilarParams.parse(QueryDict("category=a&category=b"), rec)
    assert (info.value.code, info.value.field) == ("invalid_filter", "category")
    with pytest.raises(QueryError) as info:
        SearchParams.parse(QueryDict("limit=3"), rec)
    assert (info.value.code, info.value.field) == ("empty_query", "q")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params",
    [
        {"limit": "abc"},
        {"limit": "101"},
        {"mmr_lambda": "2"},
        {"popularity": "0.8", "recency": "0.8"},
        {"exclude_seen": "maybe"},
        {"title": "x"},
        {"price__regex": "1"},
        {"price__gte": "cheap"},
        {"category__isnull": "perhaps"},
    ],
)
def test_python_api_and_rest_api_reject_the_same_way(params):
    article = make_catalog(per_category=2)[0]
    response = APIClient().get(f"{BASE}/items/testapp.article/{article.pk}/similar/", params)
    assert response.status_code == 400
    body = response.json()
    options, filters = {}, {}
    for key, value in params.items():
        if key in {"limit", "mmr_lambda", "popularity", "recency", "exclude_seen"}:
            options[key] = value
        else:
            filters[key] = value
    with pytest.raises(QueryError) as info:
        embrec.similar(article, filters=filters, **options)
    assert (body["detail"], body["code"], body.get("field")) == (
        str(info.value),
        info.value.code,
        info.value.field,
    )


@pytest.mark.django_db
def test_each_request_validates_once_and_computes_visibility_once(monkeypatch):
    articles = make_catalog(per_category=3)
    user = make_user("once")
    record_interaction(user, articles[0], "like")
    rec = embrec.registry.get(Article)
    calls = []
    original = rec.get_visible_queryset

    def counted(request=None):
        calls.append(request)
        return original(request)

    def never(*args, **kwargs):
        raise AssertionError("the API path validates with its parameter serializer only")

    monkeypatch.setattr(rec, "get_visible_queryset", counted)
    monkeypatch.setattr(QueryOptions, "build", classmethod(never))
    client = APIClient()
    client.force_authenticate(user)
    for url in [
        f"{BASE}/items/testapp.article/{articles[1].pk}/similar/?popularity=0.3",
        f"{BASE}/recommendations/?type=testapp.article&exclude_seen=false",
        f"{BASE}/items/testapp.article/popular/",
        f"{BASE}/search/?type=testapp.article&q=robot+starship",
    ]:
        calls.clear()
        response = client.get(url)
        assert response.status_code == 200, response.content
        assert response.json()["results"]
        assert len(calls) == 1, url


def test_openapi_parameters_are_derived_from_the_parameter_serializers():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    endpoints = {
        "/api/embrec/items/{type}/{object_pk}/similar/": SimilarParams,
        "/api/embrec/items/{type}/popular/": PopularParams,
        "/api/embrec/recommendations/": RecommendationParams,
        "/api/embrec/search/": SearchParams,
    }
    filters = {p.name for p in openapi.filter_parameters()}
    for path, params_class in endpoints.items():
        documented = {p["name"] for p in schema["paths"][path]["get"]["parameters"]}
        assert documented - filters - {"type", "object_pk", "user"} == set(params_class().fields)
    recommendations = {
        p["name"]: p for p in schema["paths"]["/api/embrec/recommendations/"]["get"]["parameters"]
    }
    assert recommendations["explain"]["schema"] == {"type": "boolean", "default": True}
    assert recommendations["exclude_seen"]["schema"]["default"] is True
    similar = {
        p["name"]: p
        for p in schema["paths"]["/api/embrec/items/{type}/{object_pk}/similar/"]["get"][
            "parameters"
        ]
    }
    assert similar["exclude_seen"]["schema"]["default"] is False
    assert similar["limit"]["schema"]["default"] == 10
    assert "explain" not in similar and "q" not in similar
