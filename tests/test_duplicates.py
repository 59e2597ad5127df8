"""Near-duplicates and isolated items through the HNSW index: API, plan, command, admin page."""

import json
from io import StringIO

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from embrec import analysis, duplicates
from embrec.exceptions import AnalysisError, EmbrecError
from embrec.read.retrieval import index_spec
from embrec.registry import registry
from embrec.storage import VectorRow, ensure_index, write_vectors
from tests import planted
from tests.adminpages import login
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue():
    return planted.build()


def pair_keys(report) -> dict[tuple[str, str], float]:
    return {tuple(sorted((p.a.pk, p.b.pk))): p.similarity for p in report.pairs}


def test_planted_duplicates_are_found_and_nothing_else(catalogue):
    report = duplicates.find(Article, threshold=0.9)
    original, copy = catalogue.copy
    source, near = catalogue.near
    found = pair_keys(report)
    assert set(found) == {
        tuple(sorted((str(original.pk), str(copy.pk)))),
        tuple(sorted((str(source.pk), str(near.pk)))),
    }
    # The same pairs and similarities as comparing every pair exactly.
    exact = planted.exact_pairs(0.9)
    assert set(found) == set(exact)
    for key, similarity in found.items():
        assert similarity == pytest.approx(exact[key], abs=1e-4)
    # Best first; names are the objects' str().
    assert report.pairs[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert {report.pairs[0].a.name, report.pairs[0].b.name} == {original.title}
    assert report.probed == Article.objects.count()
    assert [len(g) for g in report.groups] == [2, 2] and not report.truncated


def test_lower_threshold_matches_brute_force(catalogue):
    report = duplicates.find("testapp.article", "hashing", threshold=0.5, neighbours=40)
    assert set(pair_keys(report)) == set(planted.exact_pairs(0.5))
    assert len(report.pairs) > 10


def test_limit_keeps_the_best_pairs(catalogue):
    exact = sorted(planted.exact_pairs(0.4).items(), key=lambda kv: -kv[1])
    report = duplicates.find(Article, threshold=0.4, neighbours=40, limit=5, batch_size=7)
    assert report.truncated
    assert [p.similarity for p in report.pairs] == pytest.approx(
        [s for _, s in exact[:5]], abs=1e-4
    )


def test_planted_outlier_is_the_most_isolated_item(catalogue):
    report = duplicates.find(Article, isolated=3)
    first = report.isolated[0]
    assert first.item.pk == str(catalogue.outlier.pk) and first.item.name == "misc"
    assert first.similarity < 0.3
    assert all(row.similarity > first.similarity for row in report.isolated[1:])
    assert first.neighbour.pk != first.item.pk


def test_groups_join_pairs_that_share_items():
    a, b, c, d = (duplicates.Item(str(i), f"item {i}") for i in range(4))
    pairs = [duplicates.Pair(a, b, 0.99), duplicates.Pair(c, b, 0.98), duplicates.Pair(d, d, 1)]
    groups = duplicates.groups(pairs)
    assert [[i.pk for i in g] for g in groups] == [["0", "1", "2"], ["3"]]


def random_rows(n: int, dims: int = 64, seed: int = 0) -> list[VectorRow]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dims)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return [VectorRow(str(100000 + i), x[i], f"h{i}") for i in range(n)]


def test_probes_use_the_hnsw_index():
    """On a planner-sized table every probe of the lateral join is an HNSW index scan."""
    ct = ContentType.objects.get_for_model(Article)
    rows = random_rows(4000)
    rows[1] = VectorRow(rows[1].object_pk, rows[0].vector * 0.999 + 0.001, "h1")
    with transaction.atomic():
        write_vectors(ct.id, "hashing", "hashing@1+bigrams/64/norm", rows)
    spec = index_spec(registry.get(Article), "hashing", 64)
    ensure_index(spec)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE embrec_embedding")
    plan = duplicates.explain(Article)
    assert "Nested Loop Left Join" in plan, plan
    inner = plan.split("Nested Loop Left Join", 1)[1]
    assert f"Index Scan using {spec.name}" in inner, plan
    assert "Seq Scan on embrec_embedding b" not in plan, plan
    # The batch of probed items is read by primary key, not by scanning the table.
    assert "Index Scan using embrec_embedding_pkey" in plan.split("Nested Loop Left Join", 1)[1]
    analyzed = duplicates.explain(Article, analyze=True)
    assert f"Index Scan using {spec.name}" in analyzed
    report = duplicates.find(Article, threshold=0.99, isolated=0)
    assert [(p.a.pk, p.b.pk) for p in report.pairs] == [("100000", "100001")]
    assert report.pairs[0].a.name == "#100000 (gone)"
    assert report.probed == 4000


def test_missing_index_is_an_error_not_a_quadratic_scan(catalogue):
    spec = analysis.target(Article).spec
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {spec.name}")
    with pytest.raises(AnalysisError, match="rebuild-index"):
        duplicates.find(Article)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"threshold": 0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"neighbours": 0}, "neighbours"),
        ({"limit": -1}, "limit"),
    ],
)
def test_bad_parameters(catalogue, kwargs, message):
    with pytest.raises(AnalysisError, match=message):
        duplicates.find(Article, **kwargs)


def test_unknown_model_encoder_and_no_vectors():
    with pytest.raises(AnalysisError, match="not registered"):
        duplicates.find("testapp.nothing")
    with pytest.raises(AnalysisError, match="not a model label"):
        duplicates.find("article")
    with pytest.raises(AnalysisError, match="not 'glove'"):
        duplicates.find(Article, "glove")
    with pytest.raises(AnalysisError, match="no 'hashing' vectors"):
        duplicates.find(Article)


def run(*args) -> str:
    out = StringIO()
    call_command("embrec_duplicates", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_command_text_and_json(catalogue):
    text = run("testapp.article", "--threshold", "0.9")
    assert "2 pairs with cosine >= 0.9" in text and "fruit 0" in text
    assert "isolated" in text and "misc" in text
    data = json.loads(run("testapp.article", "--threshold", "0.9", "--json"))
    assert len(data["pairs"]) == 2 and data["isolated"][0]["item"]["name"] == "misc"
    # The plan itself (index use on a planner-sized table: test_probes_use_the_hnsw_index; on
    # this ten-row catalogue the planner may rightly prefer a sequential scan).
    plan = run("testapp.article", "--explain")
    assert "Nested Loop Left Join" in plan and "embrec_embedding" in plan, plan


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope.model"], "not registered"),
        (["testapp.article", "--threshold", "2"], "threshold"),
        (["testapp.article", "--threshold", "x"], "threshold"),
        (["testapp.article", "--threshold", "0"], "threshold"),
        (["testapp.article", "--encoder", "glove"], "glove"),
        (["testapp.article", "--neighbours", "0"], "neighbours"),
        (["testapp.article", "--ef-search", "0"], "ef-search"),
    ],
)
def test_command_errors(catalogue, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


URL = "/admin/embrec/embedding/duplicates/testapp.article/"


def test_admin_page_lists_pairs_with_links_to_both_objects(client, catalogue):
    login(client, superuser=True)
    response = client.get(URL + "?threshold=0.9")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="embrec-pairs"' in html
    for article in (*catalogue.copy, *catalogue.near):
        assert f'href="/admin/testapp/article/{article.pk}/change/"' in html
    assert html.count('class="embrec-pair"') == 2
    assert f'data-pk="{catalogue.outlier.pk}"' in html
    # Cached: a second visit does not compute again.
    key, cached = analysis.cached(
        "duplicates", analysis.target(Article), {"neighbours": 10, "threshold": 0.9}
    )
    assert cached is not None and len(cached["pairs"]) == 2
    cache.set(key, {**cached, "pairs": []})
    assert 'class="embrec-pair"' not in client.get(URL + "?threshold=0.9").content.decode()


def test_admin_page_is_linked_from_the_dashboard(client, catalogue):
    login(client, superuser=True)
    dashboard = client.get("/admin/embrec/embedding/dashboard/").content.decode()
    assert f'href="{URL}?encoder=hashing"' in dashboard


def test_admin_page_while_computing(client, catalogue):
    login(client, superuser=True)
    key, _ = analysis.cached(
        "duplicates", analysis.target(Article), {"neighbours": 10, "threshold": 0.95}
    )
    cache.set(f"{key}:queued", True)  # a task is already queued for these vectors
    html = client.get(URL).content.decode()
    assert 'id="embrec-duplicates-pending"' in html and 'http-equiv="refresh"' in html


def test_admin_page_bad_input_and_permissions(client, catalogue):
    login(client, "view_embedding")
    assert client.get(URL).status_code == 403
    client.logout()
    User.objects.all().delete()
    login(client, "view_article")
    assert client.get(URL).status_code == 200
    assert client.get("/admin/embrec/embedding/duplicates/nope.model/").status_code == 404
    for query in ("threshold=2", "threshold=abc", "neighbours=0", "neighbours=x", "encoder=glove"):
        assert client.get(f"{URL}?{query}").status_code == 400, query


def test_admin_page_without_vectors_says_so(client):
    login(client, superuser=True)
    html = client.get(URL).content.decode()
    assert 'id="embrec-duplicates-error"' in html and "embrec_reindex" in html


def test_analysis_error_is_an_embrec_error_and_a_value_error():
    error = AnalysisError("bad")
    assert isinstance(error, EmbrecError) and isinstance(error, ValueError)
    assert (error.code, error.status) == ("invalid", 400)
