"""Statements per read request: the stored query vector stays in PostgreSQL, the scan settings
travel with the query, and every shortcut answers exactly what the full path answers."""

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

import embrec
from embrec.interactions import record_interaction, refresh_user_vector
from embrec.models import Embedding, UserEmbedding
from embrec.read import retrieval
from tests.readpath import make_catalog, make_user
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db

BASE = "/api/embrec"


@pytest.fixture
def catalog(settings):
    settings.EMBREC = {**settings.EMBREC, "EF_SEARCH": 400}
    return make_catalog(per_category=10)


@pytest.fixture
def cold():
    """Forget the dimensions this process has seen: the next query takes the full path."""
    retrieval._dimensions.clear()
    yield
    retrieval._dimensions.clear()


def run(fn):
    with CaptureQueriesContext(connection) as captured:
        result = fn()
    return result, [q["sql"] for q in captured.captured_queries]


def no_transaction_commands(sqls):
    return not any(
        s.strip().upper().startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")) for s in sqls
    )


def bound_vector(sqls):
    """Whether a vector travelled as a literal (``<=> '[0.1,…]'``)."""
    return any("<=> '[" in s for s in sqls)


def similar_json(client, pk, query="limit=5"):
    response = client.get(f"{BASE}/items/testapp.article/{pk}/similar/?{query}")
    return response.status_code, response.json()


def test_similar_endpoint_is_three_statements_and_answers_as_the_full_path(catalog, cold):
    client = APIClient()
    source = catalog[3]
    full, full_sqls = run(lambda: similar_json(client, source.pk))  # learns the dimensions
    assert full[0] == 200 and len(full[1]["results"]) == 5
    assert bound_vector(full_sqls)
    fast, sqls = run(lambda: similar_json(client, source.pk))
    assert fast == full
    # The encoder's live version, the search (source vector, its visibility and the scan
    # settings inside) and the hydration.
    assert len(sqls) == 3, sqls
    assert "embrec_encoder_version" in sqls[0]
    assert sqls[1].startswith("SET LOCAL hnsw.ef_search = 400; SET LOCAL hnsw.iterative_scan")
    assert no_transaction_commands(sqls)
    assert not bound_vector(sqls)
    # The hydration does not sort by the model's Meta.ordering.
    assert "ORDER BY" not in sqls[2]
    # Same with re-ranking options (popular candidates are measured against the stored vector;
    # recency depends on the clock, so the scores of two calls differ, not the order).
    for query in ("limit=4&popularity=0.3&mmr_lambda=0.7", "limit=6&recency=0.2"):
        retrieval._dimensions.clear()
        full = similar_json(client, source.pk, query)
        fast, sqls = run(lambda query=query: similar_json(client, source.pk, query))
        assert not bound_vector(sqls)
        if "recency" in query:
            assert [r["pk"] for r in fast[1]["results"]] == [r["pk"] for r in full[1]["results"]]
        else:
            assert fast == full


def test_similar_endpoint_errors_are_unchanged_on_the_short_path(catalog, settings):
    client = APIClient()
    similar_json(client, catalog[0].pk)  # the dimensions are known from here on
    hidden = catalog[1]
    Article.objects.filter(pk=hidden.pk).update(published=False)
    status, body = similar_json(client, hidden.pk)
    assert (status, body["code"]) == (404, "not_found")
    # A missing object's 404 comes before the check of the other parameters.
    status, body = similar_json(client, 999999, "limit=abc")
    assert (status, body["code"]) == (404, "not_found")
    status, body = similar_json(client, catalog[0].pk, "limit=abc")
    assert (status, body["code"]) == (400, "invalid_limit")
    fresh = Article.objects.create(title="brand new", body="waiting for a worker")
    status, body = similar_json(client, fresh.pk)
    assert (status, body["code"], body["state"]) == (409, "not_embedded", "pending")
    # An all-zero stored vector: nothing to compare with, a 400 as before.
    Embedding.objects.filter(object_pk=str(catalog[2].pk)).update(vector=[0.0] * 64)
    status, body = similar_json(client, catalog[2].pk)
    assert status == 400, body


def test_python_api_answers_the_same_with_known_wrong_or_no_dimensions(catalog, cold):
    source = catalog[5]
    ct = ContentType.objects.get_for_model(Article)

    def ranked():
        return [(r.pk, round(r.score, 6)) for r in embrec.similar(source, limit=8)]

    full, full_sqls = run(ranked)
    assert bound_vector(full_sqls)
    fast, sqls = run(ranked)
    assert fast == full and len(sqls) == 3 and not bound_vector(sqls)
    # Dimensions that no stored vector has (an encoder switched models): the short path finds
    # nothing and the full path answers, then remembers the right dimensions.
    retrieval._dimensions[(ct.id, "hashing")] = 32
    assert ranked() == full
    assert retrieval._dimensions[(ct.id, "hashing")] == 64


def test_recommendations_are_at_most_six_statements_with_explanations(catalog, cold):
    user = make_user("fan")
    for article in [a for a in catalog if a.category == "scifi"][:3]:
        record_interaction(user, article, "like")
    refresh_user_vector(user.pk, Article)
    client = APIClient()
    client.force_authenticate(user)
    url = f"{BASE}/recommendations/?type=testapp.article&limit=5"
    full = client.get(url).json()
    assert {r["source"] for r in full["results"]} == {"personal"}
    assert full["results"][0]["explanation"]
    response, sqls = run(lambda: client.get(url))
    assert response.json() == full
    # The encoder's live version, the search with the stored user vector, the user's recent
    # events, the explanations' similarities, and one load of the results and the items they
    # name (authentication adds its own query with a login).
    assert len(sqls) == 5, sqls
    assert no_transaction_commands(sqls)
    assert not bound_vector(sqls)
    # With a filter the explanations' items (not filtered) are loaded apart from the results.
    filtered, sqls = run(lambda: client.get(url + "&category=scifi"))
    assert filtered.json()["results"][0]["explanation"] and len(sqls) == 6, sqls
    # A stale stored vector is not used: the vector is computed again, as before.
    UserEmbedding.objects.filter(user=user).update(is_stale=True)
    stale, sqls = run(lambda: client.get(url))
    assert stale.json() == full
    assert bound_vector(sqls)


@pytest.mark.django_db(transaction=True)
def test_scan_settings_do_not_stay_on_the_connection(settings):
    settings.EMBREC = {**settings.EMBREC, "EF_SEARCH": 123}
    articles = make_catalog(per_category=5)
    with connection.cursor() as cursor:
        cursor.execute("SHOW hnsw.ef_search")
        before = cursor.fetchone()[0]
    for _ in range(2):  # the full path, then the short one
        assert len(embrec.similar(articles[0], limit=3)) == 3
    with connection.cursor() as cursor:
        cursor.execute("SHOW hnsw.ef_search")
        assert cursor.fetchone()[0] == before != "123"
