"""Vector storage: bulk upserts, per-(model, encoder) HNSW indexes, and their use by queries."""

import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction

from embrec.models import Embedding
from embrec.storage import (
    IndexSpec,
    VectorRow,
    delete_vectors,
    ensure_index,
    vector_literal,
    write_vectors,
)
from tests.testapp.models import Article, Note

pytestmark = pytest.mark.django_db


def rows(n: int, dims: int = 64, seed: int = 0, prefix: str = "") -> list[VectorRow]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [VectorRow(f"{prefix}{i}", vectors[i], f"hash{i}") for i in range(n)]


def index_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'embrec_embedding'")
        return {name for (name,) in cursor.fetchall()}


def explain(spec: IndexSpec, vector, limit: int = 10) -> str:
    """EXPLAIN the nearest-neighbour query of the read path (same expression and predicate)."""
    sql = (
        f"SELECT e.object_pk, {spec.distance_sql('e')} AS distance FROM embrec_embedding e "
        f"WHERE {spec.predicate_sql('e')} ORDER BY distance LIMIT %s"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.ef_search = 100")
        cursor.execute(f"EXPLAIN {sql}", [vector_literal(vector), limit])
        return "\n".join(line for (line,) in cursor.fetchall())


def test_write_vectors_inserts_then_upserts_in_bulk():
    ct = ContentType.objects.get_for_model(Article)
    with transaction.atomic():
        assert write_vectors(ct.id, "hashing", "id-1", rows(5)) == 5
    first = Embedding.objects.get(content_type=ct, object_pk="3", encoder="hashing")
    assert (first.identity, first.dimensions, first.content_hash) == ("id-1", 64, "hash3")

    changed = rows(2, seed=1)
    with transaction.atomic():
        assert write_vectors(ct.id, "hashing", "id-1", changed) == 2
    assert Embedding.objects.filter(content_type=ct).count() == 5
    updated = Embedding.objects.get(content_type=ct, object_pk="1", encoder="hashing")
    np.testing.assert_allclose(updated.vector, changed[1].vector, rtol=1e-6)
    assert updated.identity == "id-1"
    assert updated.updated_at >= first.updated_at
    untouched = Embedding.objects.get(content_type=ct, object_pk="3", encoder="hashing")
    np.testing.assert_allclose(untouched.vector, first.vector, rtol=1e-6)


def test_write_vectors_of_another_identity_go_beside_the_existing_ones():
    ct = ContentType.objects.get_for_model(Article)
    with transaction.atomic():
        write_vectors(ct.id, "hashing", "model-a", rows(3))
    other = rows(2, seed=1)
    with transaction.atomic():
        # A sample of the pks exists under model-a: still the direct COPY path for model-b.
        assert write_vectors(ct.id, "hashing", "model-b", other) == 2
    with transaction.atomic():
        assert write_vectors(ct.id, "hashing", "model-b", rows(2, seed=2)) == 2  # upsert
    assert Embedding.objects.filter(content_type=ct, identity="model-a").count() == 3
    assert Embedding.objects.filter(content_type=ct, identity="model-b").count() == 2
    a = Embedding.objects.get(content_type=ct, object_pk="1", identity="model-a")
    np.testing.assert_allclose(a.vector, rows(3)[1].vector, rtol=1e-6)
    b = Embedding.objects.get(content_type=ct, object_pk="1", identity="model-b")
    np.testing.assert_allclose(b.vector, rows(2, seed=2)[1].vector, rtol=1e-6)


def test_write_vectors_uses_one_statement_per_batch_not_one_per_row():
    from django.test.utils import CaptureQueriesContext

    ct = ContentType.objects.get_for_model(Article)
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        write_vectors(ct.id, "hashing", "id", rows(500))
    # New rows go in with one binary COPY (not captured here), existing ones with one
    # INSERT ... ON CONFLICT: never one statement per row.
    inserts = [q for q in captured.captured_queries if "INSERT" in q["sql"].upper()]
    assert len(inserts) <= 1
    assert len(captured.captured_queries) <= 8
    assert Embedding.objects.filter(content_type=ct).count() == 500


def test_delete_vectors_by_object_and_encoder():
    ct = ContentType.objects.get_for_model(Note)
    with transaction.atomic():
        write_vectors(ct.id, "hashing", "id", rows(3))
        write_vectors(ct.id, "glove", "id", rows(3, dims=50))
    assert delete_vectors(ct.id, ["0"], encoder="glove") == 1
    assert delete_vectors(ct.id, ["0", "1"]) == 3
    assert sorted(Embedding.objects.values_list("object_pk", "encoder")) == [
        ("2", "glove"),
        ("2", "hashing"),
    ]


def test_ensure_index_creates_one_partial_hnsw_index_per_model_encoder_and_dimensions():
    ct = ContentType.objects.get_for_model(Article)
    spec = IndexSpec(ct.id, "hashing", 64)
    assert ensure_index(spec) is True
    assert ensure_index(spec) is False
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [spec.name])
        (definition,) = cursor.fetchone()
    assert "USING hnsw" in definition
    assert "vector_cosine_ops" in definition
    assert f"content_type_id = {ct.id}" in definition and "'hashing'" in definition
    assert "dimensions = 64" in definition

    other = IndexSpec(ct.id, "glove", 50)
    half = IndexSpec(ct.id, "hashing", 64, halfvec=True)
    ensure_index(other)
    ensure_index(half)
    assert {spec.name, other.name, half.name} <= index_names()
    assert len({spec.name, other.name, half.name}) == 3


def test_index_created_in_a_rolled_back_transaction_is_created_again():
    ct = ContentType.objects.get_for_model(Note)
    spec = IndexSpec(ct.id, "hashing", 64)
    with pytest.raises(RuntimeError), transaction.atomic():
        assert ensure_index(spec) is True
        raise RuntimeError("roll back")
    assert spec.name not in index_names()
    assert ensure_index(spec) is True
    assert spec.name in index_names()


@pytest.mark.parametrize("halfvec", [False, True])
def test_similar_items_query_uses_the_hnsw_index(halfvec):
    ct = ContentType.objects.get_for_model(Article)
    other_ct = ContentType.objects.get_for_model(Note)
    data = rows(3000)
    with transaction.atomic():
        write_vectors(ct.id, "hashing", "id", data)
        # Other models' and encoders' vectors share the table but not the index.
        write_vectors(other_ct.id, "hashing", "id", rows(500, seed=2))
        write_vectors(ct.id, "glove", "id", rows(500, dims=50, seed=3))
    spec = IndexSpec(ct.id, "hashing", 64, halfvec=halfvec)
    ensure_index(spec)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE embrec_embedding")
    plan = explain(spec, data[0].vector)
    assert f"Index Scan using {spec.name}" in plan, plan
    assert "Seq Scan" not in plan, plan

    # And the index answers the query: the object's own vector is its nearest neighbour.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT e.object_pk FROM embrec_embedding e WHERE {spec.predicate_sql('e')} "
            f"ORDER BY {spec.distance_sql('e')} LIMIT 5",
            [vector_literal(data[7].vector)],
        )
        found = [pk for (pk,) in cursor.fetchall()]
    assert found[0] == "7"
    assert len(found) == 5


def test_vectors_of_other_dimensions_under_one_alias_do_not_break_the_index():
    """Switching an alias to a model with other dimensions: old rows stay valid until replaced."""
    ct = ContentType.objects.get_for_model(Article)
    old = IndexSpec(ct.id, "hashing", 64)
    new = IndexSpec(ct.id, "hashing", 32)
    with transaction.atomic():
        ensure_index(old)
        write_vectors(ct.id, "hashing", "old", rows(10))
    with transaction.atomic():
        ensure_index(new)
        written = write_vectors(ct.id, "hashing", "new", rows(4, dims=32, prefix="n"))
    assert written == 4
    assert Embedding.objects.filter(content_type=ct, dimensions=32).count() == 4
