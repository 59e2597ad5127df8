"""Smaller vectors, same answers: bit and halfvec indexes, PCA and truncation encoders."""

from io import StringIO

import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

import embrec
from embrec import duplicates, indexing
from embrec.checks import check_settings
from embrec.encoders import get_encoder, reset_encoders
from embrec.encoders.reduced import ReducedEncoder, fit_pca, fit_rotation
from embrec.models import Embedding
from embrec.read import retrieval as queries
from embrec.registry import registry
from embrec.storage import (
    DEFAULT_RERANK,
    IndexSpec,
    VectorRow,
    ensure_index,
    index_options,
    write_vectors,
)
from tests.readpath import brute_force, make_catalog, text_vector
from tests.settings import EMBREC as TEST_EMBREC
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db

DIMS = 64


def hashing_with(**options) -> dict:
    return {
        "CLASS": "embrec.encoders.hashing.HashingEncoder",
        "OPTIONS": {"dimensions": DIMS, **options},
    }


@pytest.fixture
def index_kind(settings, request):
    """The Article registration's ``hashing`` alias with the index options of the test."""
    settings.EMBREC = {
        **TEST_EMBREC,
        "ENCODERS": {**TEST_EMBREC["ENCODERS"], "hashing": hashing_with(**request.param)},
    }
    reset_encoders()
    yield request.param
    reset_encoders()


def clustered(n: int, dims: int = DIMS, topics: int = 60, seed: int = 3) -> np.ndarray:
    """Unit vectors in topics (like text embeddings: neighbours share a topic), not uniform."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dims))
    x = centres[rng.integers(0, topics, n)] + 0.8 * rng.standard_normal((n, dims))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def load_articles(vectors: np.ndarray, spec: IndexSpec) -> list[str]:
    articles = Article.objects.bulk_create(
        [Article(title=f"a{i}", category="x", price=1) for i in range(len(vectors))]
    )
    pks = [str(a.pk) for a in articles]
    write_vectors(
        spec.content_type_id,
        "hashing",
        get_encoder("hashing").identity.as_string(),
        [VectorRow(pk, v, "h") for pk, v in zip(pks, vectors, strict=True)],
    )
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    ensure_index(spec)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE embrec_embedding")
    return pks


def exact(vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    return list(np.argsort(-(vectors @ query), kind="stable")[:k])


# -- index options --------------------------------------------------------------------------------


def test_index_options_parse_and_reject_bad_values():
    assert index_options({}) == {
        "halfvec": False,
        "binary": False,
        "prefix": None,
        "rerank": DEFAULT_RERANK,
    }
    assert index_options({"halfvec": True})["halfvec"] is True
    assert index_options({"index": "halfvec"})["halfvec"] is True
    assert index_options({"index": "bit", "rerank": 50}) == {
        "halfvec": False,
        "binary": True,
        "prefix": None,
        "rerank": 50,
    }
    assert index_options({"index": "halfvec", "index_dimensions": 96, "rerank": 300}) == {
        "halfvec": True,
        "binary": False,
        "prefix": 96,
        "rerank": 300,
    }
    for bad, message in [
        ({"index": "int8"}, "'index' must be one of"),
        ({"index": "bit", "rerank": 0}, "'rerank' must be"),
        ({"index": "bit", "rerank": "100"}, "'rerank' must be"),
        ({"rerank": 100}, "applies to 'index': 'bit' or 'index_dimensions' only"),
        ({"index": "bit", "halfvec": True}, "contradicts"),
        ({"index_dimensions": 4}, "'index_dimensions' must be"),
        ({"index_dimensions": True}, "'index_dimensions' must be"),
        ({"index_dimensions": "96"}, "'index_dimensions' must be"),
        ({"index": "bit", "index_dimensions": 96}, "not 'bit'"),
    ]:
        with pytest.raises(ImproperlyConfigured, match=message):
            index_options(bad)


def test_system_check_reports_a_bad_index_option_and_accepts_good_ones(settings):
    encoders = {**TEST_EMBREC["ENCODERS"], "hashing": hashing_with(index="bitt")}
    settings.EMBREC = {**TEST_EMBREC, "ENCODERS": encoders}
    errors = check_settings()
    assert [e.id for e in errors] == ["embrec.E009"], errors
    assert "'index' must be one of" in errors[0].msg
    encoders["hashing"] = hashing_with(index="bit", rerank=64)
    settings.EMBREC = {**TEST_EMBREC, "ENCODERS": encoders}
    assert check_settings() == []


def test_bit_index_names_expression_and_opclass():
    ct = ContentType.objects.get_for_model(Article)
    full = IndexSpec(ct.id, "hashing", DIMS)
    bit = IndexSpec.for_encoder(ct.id, "hashing", DIMS, {"index": "bit", "rerank": 30})
    assert (bit.binary, bit.rerank, bit.kind) == (True, 30, "bit")
    assert bit.name != full.name
    # rerank is read at query time: it does not change which index the spec names.
    assert bit == IndexSpec.for_encoder(ct.id, "hashing", DIMS, {"index": "bit"})
    ensure_index(bit)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [bit.name])
        (definition,) = cursor.fetchone()
    assert "binary_quantize" in definition and "bit_hamming_ops" in definition
    assert f"bit({DIMS})" in definition and "dimensions = 64" in definition


def test_leading_dimensions_index_names_expression_and_opclass():
    ct = ContentType.objects.get_for_model(Article)
    half = IndexSpec.for_encoder(ct.id, "hashing", DIMS, {"index": "halfvec"})
    prefix = IndexSpec.for_encoder(
        ct.id, "hashing", DIMS, {"index": "halfvec", "index_dimensions": 16, "rerank": 40}
    )
    assert (prefix.prefix, prefix.rerank, prefix.reranked, prefix.kind) == (16, 40, True, "halfvec")
    assert prefix.name != half.name and not half.reranked
    # Distances are the full vectors' (re-ranking), in single precision.
    assert prefix.vector_type == f"vector({DIMS})" and half.vector_type == f"halfvec({DIMS})"
    # Indexing every dimension (or more) is the plain index.
    whole = {"index": "halfvec", "index_dimensions": DIMS, "rerank": 40}
    assert IndexSpec.for_encoder(ct.id, "hashing", DIMS, whole) == half
    ensure_index(prefix)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [prefix.name])
        (definition,) = cursor.fetchone()
    assert "subvector(" in definition and "halfvec(16)" in definition, definition
    assert "halfvec_cosine_ops" in definition and "dimensions = 64" in definition


# -- the read path over quantised indexes ----------------------------------------------------------


@pytest.mark.parametrize(
    "index_kind",
    [
        {"index": "bit", "rerank": 100},
        {"index": "halfvec"},
        {"index": "halfvec", "index_dimensions": 16, "rerank": 100},
    ],
    indirect=True,
)
def test_read_path_uses_the_quantised_index(index_kind):
    rec = registry.get(Article)
    ct = ContentType.objects.get_for_model(Article)
    spec = queries.index_spec(rec, "hashing", DIMS)
    assert spec.kind == index_kind["index"]
    vectors = clustered(3000)
    load_articles(vectors, spec)
    plan = queries.explain(spec, vectors[0], 10)
    assert f"Index Scan using {spec.name}" in plan, plan
    assert "Seq Scan on embrec_embedding" not in plan, plan
    if spec.reranked:
        # The index search returns `rerank` candidates, re-ranked by the full vectors.
        assert "Limit" in plan and plan.count("Sort") >= 1, plan
    assert _index_exists(spec.name)
    assert ct.id == spec.content_type_id


def _index_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_class WHERE relname = %s", [name])
        return cursor.fetchone() is not None


@pytest.mark.parametrize("index_kind", [{"index": "bit", "rerank": 100}], indirect=True)
def test_bit_index_with_rerank_keeps_recall_and_returns_exact_distances(index_kind):
    rec = registry.get(Article)
    spec = queries.index_spec(rec, "hashing", DIMS)
    data = clustered(3040)  # 40 held-out queries from the same topics
    vectors, queries_ = data[:3000], data[3000:]
    pks = load_articles(vectors, spec)
    hits, hits_no_rerank = [], []
    no_rerank = IndexSpec(spec.content_type_id, "hashing", DIMS, binary=True, rerank=10)
    for q in queries_:
        truth = {pks[i] for i in exact(vectors, q, 10)}
        found = queries.nearest(spec, q, 10)
        assert len(found) == 10
        # Distances are the full vectors' cosine distances, in order.
        for c in found:
            expected = 1 - float(vectors[pks.index(c.pk)] @ q)
            assert abs(c.distance - expected) < 1e-5
        assert [c.distance for c in found] == sorted(c.distance for c in found)
        hits.append(len(truth & {c.pk for c in found}) / 10)
        hits_no_rerank.append(len(truth & {c.pk for c in queries.nearest(no_rerank, q, 10)}) / 10)
    recall, recall_hamming_only = float(np.mean(hits)), float(np.mean(hits_no_rerank))
    assert recall >= 0.95, (recall, recall_hamming_only)
    # Re-ranking is what makes one bit per dimension usable: the Hamming order alone is worse.
    assert recall_hamming_only < recall - 0.1, (recall, recall_hamming_only)


@pytest.mark.parametrize("index_kind", [{"index": "bit", "rerank": 100}], indirect=True)
def test_similar_and_search_answer_through_a_bit_index(index_kind):
    articles = make_catalog(per_category=10)
    spec = queries.index_spec(registry.get(Article), "hashing", DIMS)
    assert _index_exists(spec.name)
    source = articles[3]
    results = embrec.similar(source, limit=5)
    assert len(results) == 5
    assert all(r.object.category == source.category for r in results[:3])
    # 40 items, 100 candidates re-ranked: the answers are exact.
    text = articles[12].title
    found = embrec.search(text, model=Article, limit=3)
    expected = brute_force(text_vector(text), articles)[:3]
    assert [str(r.object.pk) for r in found] == [pk for pk, _ in expected]
    np.testing.assert_allclose([r.similarity for r in found], [s for _, s in expected], atol=1e-5)


def test_rotated_vectors_with_a_leading_dimensions_index_keep_recall(settings):
    data = clustered(3040)
    basis, leading = fit_rotation(data[:3000])
    # Orthonormal: the rotation keeps every cosine; the leading quarter holds most energy.
    np.testing.assert_allclose(basis @ basis.T, np.eye(DIMS), atol=1e-4)
    assert leading > 0.4, leading  # an even share would be 0.25
    rotated = data @ basis.T
    vectors, queries_ = rotated[:3000], rotated[3000:]
    options = {"index": "halfvec", "index_dimensions": 16, "rerank": 100}
    settings.EMBREC = {
        **TEST_EMBREC,
        "ENCODERS": {**TEST_EMBREC["ENCODERS"], "hashing": hashing_with(**options)},
    }
    reset_encoders()
    try:
        spec = queries.index_spec(registry.get(Article), "hashing", DIMS)
        assert spec.prefix == 16
        pks = load_articles(vectors, spec)
        hits, hits_no_rerank = [], []
        no_rerank = IndexSpec(
            spec.content_type_id, "hashing", DIMS, halfvec=True, rerank=10, prefix=16
        )
        for q in queries_:
            truth = {pks[i] for i in exact(vectors, q, 10)}
            found = queries.nearest(spec, q, 10)
            assert len(found) == 10
            for c in found:  # exact distances of the full vectors, in order
                assert abs(c.distance - (1 - float(vectors[pks.index(c.pk)] @ q))) < 1e-5
            assert [c.distance for c in found] == sorted(c.distance for c in found)
            hits.append(len(truth & {c.pk for c in found}) / 10)
            shortlist = queries.nearest(no_rerank, q, 10)
            hits_no_rerank.append(len(truth & {c.pk for c in shortlist}) / 10)
        recall, recall_leading_only = float(np.mean(hits)), float(np.mean(hits_no_rerank))
        assert recall >= 0.95, (recall, recall_leading_only)
        assert recall_leading_only < recall - 0.1, (recall, recall_leading_only)
    finally:
        reset_encoders()


# -- PCA and truncation ------------------------------------------------------------------------------


def test_fit_pca_keeps_the_main_directions_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 3)) @ np.diag([5.0, 1.0, 0.1]) + 7.0
    mean, components, explained = fit_pca(x, 2)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5)
    assert abs(components[0][0]) > 0.99 and abs(components[1][1]) > 0.99
    assert explained > 0.99
    again = fit_pca(x, 2)
    np.testing.assert_array_equal(components, again[1])


def reduced_settings(settings, tmp_path, **options) -> None:
    settings.EMBREC = {
        **TEST_EMBREC,
        "ENCODERS": {
            **TEST_EMBREC["ENCODERS"],
            "small": {
                "CLASS": "embrec.encoders.reduced.ReducedEncoder",
                "OPTIONS": {"base": "hashing", "model_dir": str(tmp_path), **options},
            },
        },
    }
    reset_encoders()


def test_pca_encoder_projects_queries_like_items_and_a_refit_is_a_new_identity(settings, tmp_path):
    reduced_settings(settings, tmp_path, method="pca", dimensions=16)
    articles = make_catalog(per_category=10)  # stores the base alias's ("hashing") vectors
    small = get_encoder("small")
    assert isinstance(small, ReducedEncoder)
    identity = small.identity
    assert identity.dimensions == 16 and identity.name == "pca16"
    projection = small.projection()
    # Fitted on the site's stored vectors of the base alias.
    assert (tmp_path / "small" / f"pca-{projection.revision}.npz").exists()
    base = get_encoder("hashing")
    rec = registry.get(Article)
    texts = [rec.get_text(a) for a in articles[:5]]
    items = small.encode_objects(rec, articles[:5], texts)
    # A query text goes through exactly the projection its item went through.
    query = small.encode([texts[2]])[0]
    np.testing.assert_allclose(query, items[2], atol=1e-6)
    manual = (base.encode([texts[2]])[0] - projection.mean) @ projection.components.T
    np.testing.assert_allclose(query, manual / np.linalg.norm(manual), atol=1e-5)
    assert abs(np.linalg.norm(query) - 1) < 1e-5
    # Another process sees the same fit (file, not process state).
    reset_encoders()
    assert get_encoder("small").identity == identity

    # Refit on other data: a new revision, hence a new identity (stored vectors become stale).
    Embedding.objects.filter(
        encoder="hashing", object_pk__in=[str(a.pk) for a in articles[36:]]
    ).delete()
    summary = get_encoder("small").refit()
    assert summary["changed"] and summary["previous_revision"] == identity.revision
    assert get_encoder("small").identity != identity


def test_pca_encoder_serves_a_registration_end_to_end(settings, tmp_path):
    reduced_settings(settings, tmp_path, method="pca", dimensions=16)
    articles = make_catalog(per_category=10)
    rec = registry.get(Article)
    rec.encoders = ["hashing", "small"]
    try:
        indexing.enqueue(Article, [a.pk for a in articles], kick=False)
        indexing.drain()
        stored = Embedding.objects.filter(encoder="small")
        assert stored.count() == len(articles)
        assert set(stored.values_list("dimensions", flat=True)) == {16}
        assert set(stored.values_list("identity", flat=True)) == {
            get_encoder("small").identity.as_string()
        }
        # A text query is projected like the items: the index answers what numpy computes
        # from the stored reduced vectors and the reduced query vector.
        text = rec.get_text(articles[25])
        query = get_encoder("small").encode([text])[0]
        matrix = {pk: np.asarray(v) for pk, v in stored.values_list("object_pk", "vector")}
        expected = sorted(matrix, key=lambda pk: -float(matrix[pk] @ query))[:3]
        found = embrec.search(text, model=Article, limit=3, encoder="small")
        assert [str(r.object.pk) for r in found] == expected
        assert found[0].object.pk == articles[25].pk
        assert found[0].similarity == pytest.approx(1.0, abs=1e-5)
        neighbours = embrec.similar(articles[5], limit=5, encoder="small")
        assert sum(r.object.category == articles[5].category for r in neighbours) >= 4
    finally:
        rec.encoders = ["hashing"]


def test_fit_reduction_command_refits_and_queues_reembedding(settings, tmp_path):
    reduced_settings(settings, tmp_path, method="pca", dimensions=16)
    make_catalog(per_category=10)
    rec = registry.get(Article)
    rec.encoders = ["hashing", "small"]
    try:
        out = StringIO()
        call_command("embrec_fit_reduction", "small", stdout=out)
        assert "small: revision" in out.getvalue()
        assert "queued" in out.getvalue()
        with pytest.raises(Exception, match="not a reduced encoder"):
            call_command("embrec_fit_reduction", "hashing", stdout=StringIO())
    finally:
        rec.encoders = ["hashing"]


def test_truncate_encoder_keeps_leading_dimensions_renormalised(settings, tmp_path):
    reduced_settings(settings, tmp_path, method="truncate", dimensions=32)
    small, base = get_encoder("small"), get_encoder("hashing")
    text = "space robot galaxy alien starship laser planet android orbit nebula cyborg"
    v = small.encode([text])[0]
    full = base.encode([text])[0][:32]
    assert np.linalg.norm(full) > 0
    np.testing.assert_allclose(v, full / np.linalg.norm(full), atol=1e-6)
    assert small.identity.name == "truncate32" and small.identity.dimensions == 32


def test_rotate_encoder_keeps_every_cosine_and_serves_a_leading_dimensions_index(
    settings, tmp_path
):
    index = {"index": "halfvec", "index_dimensions": 16, "rerank": 100}
    reduced_settings(settings, tmp_path, method="rotate", **index)
    # Stores the base alias's ("hashing") vectors: 160, a full-rank fit needs 2 × 64.
    articles = make_catalog(per_category=40)
    rotated, base = get_encoder("small"), get_encoder("hashing")
    assert rotated.identity.dimensions == DIMS and rotated.identity.name == f"rotate{DIMS}"
    rec = registry.get(Article)
    texts = [rec.get_text(a) for a in articles]
    before, after = base.encode(texts), rotated.encode(texts)
    # Every cosine is the base's: a rotation changes the coordinates, not the answers.
    np.testing.assert_allclose(after @ after.T, before @ before.T, atol=1e-5)
    assert not np.allclose(after, before, atol=1e-3)
    rec.encoders = ["hashing", "small"]
    try:
        indexing.enqueue(Article, [a.pk for a in articles], kick=False)
        indexing.drain()
        spec = queries.index_spec(rec, "small", DIMS)
        assert spec.prefix == 16 and _index_exists(spec.name)
        for i in (3, 17, 31):
            found = embrec.search(texts[i], model=Article, limit=5, encoder="small")
            expected = brute_force(text_vector(texts[i]), articles)[:5]
            assert [str(r.object.pk) for r in found] == [pk for pk, _ in expected]
            np.testing.assert_allclose(
                [r.similarity for r in found], [s for _, s in expected], atol=1e-5
            )
        similar = embrec.similar(articles[5], limit=5, encoder="small")
        plain = embrec.similar(articles[5], limit=5, encoder="hashing")
        assert [r.object.pk for r in similar] == [r.object.pk for r in plain]
        out = StringIO()
        call_command("embrec_fit_reduction", "small", "--no-reindex", stdout=out)
        assert "small: revision" in out.getvalue() and "leading quarter" in out.getvalue()
    finally:
        rec.encoders = ["hashing"]


def test_a_fit_of_other_dimensions_is_not_reused(settings, tmp_path):
    reduced_settings(settings, tmp_path, method="pca", dimensions=16)
    make_catalog(per_category=40)
    assert get_encoder("small").projection().components.shape == (16, DIMS)
    reduced_settings(settings, tmp_path, method="pca", dimensions=8)
    assert get_encoder("small").projection().components.shape == (8, DIMS)
    assert get_encoder("small").identity.dimensions == 8
    reduced_settings(settings, tmp_path, method="rotate")
    assert get_encoder("small").projection().components.shape == (DIMS, DIMS)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dimensions": 16, "method": "umap"}, "'method' must be one of"),
        ({"dimensions": 16, "method": "rotate"}, "keeps every dimension"),
        ({"dimensions": 0}, "'dimensions' must be"),
        ({"dimensions": 16, "fit_sample": 10}, "'fit_sample'"),
    ],
)
def test_reduced_encoder_rejects_bad_options(settings, tmp_path, options, message):
    reduced_settings(settings, tmp_path, **options)
    with pytest.raises(ImproperlyConfigured, match=message):
        get_encoder("small")


def test_reduced_encoder_needs_fewer_dimensions_than_its_base(settings, tmp_path):
    reduced_settings(settings, tmp_path, dimensions=DIMS)
    with pytest.raises(ImproperlyConfigured, match="must be fewer than"):
        assert get_encoder("small").identity


def test_switching_an_encoder_to_a_bit_index_builds_it_without_reencoding(settings):
    make_catalog(per_category=10)
    spec = queries.index_spec(registry.get(Article), "hashing", DIMS)
    assert spec.kind == "vector" and _index_exists(spec.name)
    settings.EMBREC = {
        **TEST_EMBREC,
        "ENCODERS": {**TEST_EMBREC["ENCODERS"], "hashing": hashing_with(index="bit")},
    }
    reset_encoders()
    try:
        bit = queries.index_spec(registry.get(Article), "hashing", DIMS)
        assert bit.binary and not _index_exists(bit.name)
        before = dict(Embedding.objects.values_list("object_pk", "updated_at"))
        call_command("embrec_reindex", "testapp.Article", "--sync", stdout=StringIO())
        assert _index_exists(bit.name)
        assert dict(Embedding.objects.values_list("object_pk", "updated_at")) == before
    finally:
        reset_encoders()


@pytest.mark.parametrize(
    "index_kind",
    [{"index": "bit", "rerank": 100}, {"index": "halfvec", "index_dimensions": 16, "rerank": 100}],
    indirect=True,
)
def test_near_duplicate_probes_use_the_reduced_index(index_kind):
    spec = queries.index_spec(registry.get(Article), "hashing", DIMS)
    vectors = clustered(3000)
    twin = vectors[0] * 0.999 + 0.001
    vectors[1] = twin / np.linalg.norm(twin)
    pks = load_articles(vectors, spec)
    plan = duplicates.explain(Article)
    inner = plan.split("Nested Loop Left Join", 1)[1]
    assert f"Index Scan using {spec.name}" in inner, plan
    assert "Seq Scan on embrec_embedding b" not in plan, plan
    report = duplicates.find(Article, threshold=0.99, isolated=0)
    assert [{p.a.pk, p.b.pk} for p in report.pairs] == [{pks[0], pks[1]}]
    assert report.pairs[0].similarity == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)
