"""Registrations across relations: filters through foreign keys, results loaded with their
related objects in a constant number of queries (Python API and REST endpoints)."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.models import Prefetch
from django.test.utils import CaptureQueriesContext
from drf_spectacular.generators import SchemaGenerator
from rest_framework import serializers
from rest_framework.test import APIClient

import embrec
from embrec.exceptions import QueryError
from embrec.interactions import record_interaction
from embrec.read import options
from embrec.registry import Registry
from tests.readpath import make_catalog, make_user
from tests.testapp.models import Article, Section

pytestmark = pytest.mark.django_db


@pytest.fixture
def sectioned():
    articles = make_catalog(per_category=10)
    sections = Section.objects.bulk_create(
        Section(slug=f"s{i}", name=f"Section {i}") for i in range(4)
    )
    for n, article in enumerate(articles):
        article.section = sections[n % 4]
    Article.objects.bulk_update(articles, ["section"])
    return articles


def registration_error(**attrs) -> str:
    cls = type("Broken", (embrec.Recommendable,), {"fields": ["title"], **attrs})
    with pytest.raises(ImproperlyConfigured) as info:
        Registry().register(Article, cls)
    return str(info.value)


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"filter_fields": ["section__nope"]}, "section__nope"),
        ({"filter_fields": ["title__slug"]}, "not a foreign key"),
        ({"filter_fields": ["section__articles"]}, "section__articles"),
        ({"select_related": ["title"]}, "not a relation"),
        ({"select_related": ["nope"]}, "nope"),
        ({"select_related": "section"}, "list of names"),
        ({"prefetch_related": ["nope"]}, "prefetch_related"),
    ],
)
def test_bad_paths_are_loud_at_registration(attrs, message):
    assert message in registration_error(**attrs)


def test_valid_related_declarations_register():
    cls = type(
        "Fine",
        (embrec.Recommendable,),
        {
            "fields": ["title"],
            "filter_fields": ["section__slug", "section__name", "section"],
            "select_related": ["section"],
            "prefetch_related": [Prefetch("section"), "section"],
        },
    )
    rec = Registry()._validate(cls(Article))
    assert rec is None
    assert cls(Article).get_filter_field("section__slug") is Section._meta.get_field("slug")


def test_filters_follow_foreign_keys(sectioned):
    rec = embrec.registry.get(Article)
    q = options.parse_filters(rec, {"section__slug": "s1", "section__slug__in": "s1,s2"})
    assert Article.objects.filter(q).count() == 10
    results = embrec.similar(sectioned[0], limit=8, filters={"section__slug": "s2"})
    assert len(results) == 8
    assert {r.object.section.slug for r in results} == {"s2"}
    for bad, code in [
        ({"section__name": "x"}, "unknown_filter"),
        ({"section__slug__regex": "x"}, "unknown_filter"),
        ({"section__slug": "a\x00b"}, "invalid_filter"),
    ]:
        with pytest.raises(QueryError) as info:
            options.parse_filters(rec, bad)
        assert info.value.code == code, bad


def test_api_filter_and_openapi_parameters_through_foreign_keys(sectioned):
    client = APIClient()
    url = f"/api/embrec/items/testapp.article/{sectioned[0].pk}/similar/"
    response = client.get(url, {"section__slug": "s3", "limit": 5})
    assert response.status_code == 200, response.content
    pks = {int(r["pk"]) for r in response.json()["results"]}
    assert len(pks) == 5
    assert set(Article.objects.filter(pk__in=pks).values_list("section__slug", flat=True)) == {"s3"}
    bad = client.get(url, {"section__name": "x"})
    assert bad.status_code == 400 and bad.json()["code"] == "unknown_filter"
    schema = SchemaGenerator().get_schema(request=None, public=True)
    params = {p["name"]: p for p in schema["paths"]["/api/embrec/search/"]["get"]["parameters"]}
    assert params["section__slug"]["schema"] == {"type": "string"}
    assert params["section__slug__isnull"]["schema"] == {"type": "boolean"}
    assert "section__name" not in params


def count_queries(call) -> int:
    with CaptureQueriesContext(connection) as captured:
        results = call()
        # What a template or serializer does with each result.
        names = [r.object.section.name for r in results]
        names += [e.object.section.name for r in results for e in r.explanation or []]
    assert names
    return len(captured)


def test_results_load_related_objects_in_constant_queries(sectioned, monkeypatch):
    source = sectioned[0]
    user = make_user("reader")
    for article in sectioned[:12]:
        record_interaction(user, article, "like")
    calls = {
        "similar": lambda limit: embrec.similar(source, limit=limit),
        "recommend": lambda limit: embrec.recommend(user, model=Article, limit=limit),
    }
    for name, call in calls.items():
        call(3)  # caches (content types, popularity) filled before counting
        small, large = count_queries(lambda c=call: c(3)), count_queries(lambda c=call: c(15))
        assert small == large, name
    # Without the declaration each result costs a query: the count above is the real one.
    monkeypatch.setattr(embrec.registry.get(Article), "select_related", ())
    assert count_queries(lambda: embrec.similar(source, limit=15)) > count_queries(
        lambda: embrec.similar(source, limit=3)
    )


class ArticleWithSectionSerializer(serializers.ModelSerializer):
    section = serializers.CharField(source="section.name")

    class Meta:
        model = Article
        fields = ["id", "title", "section"]


def test_api_results_serialize_related_objects_in_constant_queries(sectioned, monkeypatch):
    rec = embrec.registry.get(Article)
    monkeypatch.setattr(rec, "serializer_class", ArticleWithSectionSerializer)
    client = APIClient()
    url = f"/api/embrec/items/testapp.article/{sectioned[0].pk}/similar/"

    def api_queries(limit: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url, {"limit": limit})
        assert response.status_code == 200
        results = response.json()["results"]
        assert len(results) == limit
        assert all(r["object"]["section"].startswith("Section ") for r in results)
        return len(captured)

    api_queries(2)
    assert api_queries(3) == api_queries(15)
    monkeypatch.setattr(rec, "select_related", ())
    assert api_queries(15) > api_queries(3)


def test_iexact_on_a_number_or_a_foreign_key_is_exact(sectioned):
    rec = embrec.registry.get(Article)
    price = sectioned[0].price
    q = options.parse_filters(rec, {"price__iexact": int(price)})
    assert Article.objects.filter(q).count() == Article.objects.filter(price=price).count() > 0
    q = options.parse_filters(rec, {"section__slug__iexact": "S1"})
    assert Article.objects.filter(q).count() == 10
