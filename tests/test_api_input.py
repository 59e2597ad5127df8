"""No user input produces a 5xx: values SQL cannot hold, bodies that do not parse."""

import pytest
from rest_framework.test import APIClient

import embrec
from embrec.exceptions import QueryError
from embrec.read.options import parse_filters
from embrec.read.scope import visible_sql
from project.catalog.models import Movie
from tests.readpath import make_catalog, make_user
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db

BASE = "/api/embrec"
# Past bigint, past smallint, below a positive field's range.
HUGE = "99999999999999999999"


@pytest.fixture
def catalog(monkeypatch):
    rec = embrec.registry.get(Article)
    # The primary key (bigint) as an integer filter field.
    monkeypatch.setattr(rec, "filter_fields", [*rec.filter_fields, "id"])
    return make_catalog(per_category=5)


@pytest.fixture
def client():
    return APIClient()


def _error(response, field):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_filter" and body["field"] == field, body
    assert body["detail"]
    return body


@pytest.mark.parametrize("value", [HUGE, f"-{HUGE}"])
@pytest.mark.parametrize("lookup", ["", "__lte", "__gte", "__lt", "__gt", "__in"])
def test_out_of_range_filter_values_are_a_400_on_every_endpoint(client, catalog, lookup, value):
    key = f"id{lookup}"
    client.force_authenticate(make_user("reader"))
    urls = [
        f"{BASE}/items/testapp.article/{catalog[0].pk}/similar/",
        f"{BASE}/recommendations/?type=testapp.article",
        f"{BASE}/search/?type=testapp.article&q=robot",
        f"{BASE}/items/testapp.article/popular/",
    ]
    for url in urls:
        sep = "&" if "?" in url else "?"
        _error(client.get(f"{url}{sep}{key}={value}"), key)


def test_range_is_the_database_column_range():
    rec = embrec.registry.get(Movie)
    for value in ["99999999999", "32768", "-1"]:
        for lookup in ["year", "year__lte", "year__in"]:
            with pytest.raises(QueryError) as info:
                parse_filters(rec, {lookup: value})
            assert info.value.field == lookup
            assert "range" in str(info.value)
    assert parse_filters(rec, {"year__lte": "32767", "year__gte": "0"})


def test_nul_characters_in_filters_are_a_400(client, catalog):
    url = f"{BASE}/items/testapp.article/{catalog[0].pk}/similar/"
    _error(client.get(url, {"category": "scifi\x00"}), "category")


def test_a_filter_that_matches_nothing_is_an_empty_list(client, catalog):
    # An empty IN list is a condition Django compiles to "no rows" (EmptyResultSet).
    visible = embrec.registry.get(Article).get_visible_queryset(None).filter(pk__in=[])
    sql, params = visible_sql(visible)
    assert sql == "FALSE" and params == []
    url = f"{BASE}/items/testapp.article/{catalog[0].pk}/similar/"
    response = client.get(url, {"category": "no-such-category"})
    assert response.status_code == 200 and response.json()["results"] == []


def test_deeply_nested_json_body_is_a_400(client, catalog):
    client.force_authenticate(make_user("nester"))
    depth = 100_000
    body = "[" * depth + "]" * depth
    response = client.post(f"{BASE}/interactions/", data=body, content_type="application/json")
    assert response.status_code == 400, response.content[:200]
    assert response.json()["code"] == "parse_error"
    for bad in ['{"type": ', "NaN", '{"a": 1e999999}', "\xff"]:
        response = client.post(f"{BASE}/interactions/", data=bad, content_type="application/json")
        assert response.status_code == 400, (bad, response.content[:200])


def test_primary_keys_sql_cannot_hold_are_a_404(client, catalog):
    client.force_authenticate(make_user("keys", staff=True))
    for pk in [HUGE, "1%00"]:
        response = client.get(f"{BASE}/items/testapp.article/{pk}/similar/")
        assert response.status_code == 404, response.content
        response = client.get(f"{BASE}/items/testapp.note/a%00b/similar/")
        assert response.status_code == 404, response.content
        response = client.get(f"{BASE}/recommendations/?type=testapp.article&user={pk}")
        assert response.status_code in (403, 404), response.content
    event = {"type": "testapp.note", "pk": "a\x00b", "kind": "like"}
    response = client.post(f"{BASE}/interactions/", event, format="json")
    assert response.status_code == 400, response.content
