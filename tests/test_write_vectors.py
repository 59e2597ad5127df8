"""``write_vectors``: the direct COPY path, the staged upsert path, and the fall-back between them."""

import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from embrec import storage
from embrec.models import Embedding
from embrec.storage import VectorRow, parse_vector, write_vectors
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db

# Empty, short, long and non-ASCII pks and hashes: every byte layout of the COPY stream.
PKS = ["", "1", "22", "ünïcødé", "x" * 60] + [str(i) for i in range(100, 125)]


def make_rows(shift: float = 0.0, suffix: str = "") -> list[VectorRow]:
    vectors = np.random.default_rng(3).standard_normal((len(PKS), 32)).astype(np.float32) + shift
    return [VectorRow(pk, vectors[i], f"h{i}{suffix}") for i, pk in enumerate(PKS)]


def stored(encoder: str) -> dict[str, Embedding]:
    return {e.object_pk: e for e in Embedding.objects.filter(encoder=encoder)}


def assert_stored(encoder: str, rows: list[VectorRow], identity: str, ct_id: int) -> None:
    got = stored(encoder)
    assert set(got) == {r.object_pk for r in rows}
    for row in rows:
        e = got[row.object_pk]
        np.testing.assert_allclose(parse_vector(e.vector), row.vector, rtol=1e-6)
        assert (e.content_hash, e.identity, e.dimensions, e.content_type_id) == (
            row.content_hash,
            identity,
            32,
            ct_id,
        )
        assert e.created_at is not None and e.updated_at is not None


@pytest.mark.parametrize("chunk", [2_000, 7], ids=["one-write", "writer-thread"])
def test_new_rows_then_updates_round_trip(chunk, monkeypatch):
    """Both paths, sent in one write or in chunks from the writer thread: every row arrives once."""
    monkeypatch.setattr(storage, "_COPY_CHUNK_ROWS", chunk)
    ct = ContentType.objects.get_for_model(Article)
    with transaction.atomic():
        assert write_vectors(ct.id, "w", "id1", make_rows()) == len(PKS)
    assert_stored("w", make_rows(), "id1", ct.id)
    with transaction.atomic():
        assert write_vectors(ct.id, "w", "id2", make_rows(1.0, "b")) == len(PKS)
    assert_stored("w", make_rows(1.0, "b"), "id2", ct.id)


def test_direct_copy_falls_back_to_upsert_on_a_concurrent_insert(monkeypatch):
    ct = ContentType.objects.get_for_model(Article)
    first = make_rows()[:3]
    with transaction.atomic():
        write_vectors(ct.id, "w", "id1", first)
    # As if another transaction inserted a row between the existence check and the COPY.
    monkeypatch.setattr(storage, "_any_exists", lambda *args: False)
    with transaction.atomic():
        assert write_vectors(ct.id, "w", "id1", make_rows(2.0, "c")) == len(PKS)
        assert Embedding.objects.filter(encoder="w").count() == len(PKS)  # still usable
    assert_stored("w", make_rows(2.0, "c"), "id1", ct.id)


@pytest.mark.parametrize("chunk", [2_000, 7], ids=["one-write", "writer-thread"])
def test_a_stored_row_the_existence_sample_misses_falls_back_to_the_upsert(chunk, monkeypatch):
    monkeypatch.setattr(storage, "_EXISTS_SAMPLE", 4)
    monkeypatch.setattr(storage, "_COPY_CHUNK_ROWS", chunk)
    ct = ContentType.objects.get_for_model(Article)
    rows = make_rows()
    # The sample takes every 8th of the 30 pks (0, 8, 16, 24): pk index 5 is not looked up.
    with transaction.atomic():
        write_vectors(ct.id, "w", "id2", [rows[5]])
    with transaction.atomic():
        assert write_vectors(ct.id, "w", "id2", make_rows(2.0, "c")) == len(PKS)
    assert_stored("w", make_rows(2.0, "c"), "id2", ct.id)


def test_vectors_of_mixed_dimensions_are_refused_and_nothing_is_written(monkeypatch):
    monkeypatch.setattr(storage, "_COPY_CHUNK_ROWS", 7)
    ct = ContentType.objects.get_for_model(Article)
    rows = make_rows()
    rows[20] = VectorRow(rows[20].object_pk, np.zeros(16, dtype=np.float32), "h")
    with pytest.raises(ValueError, match="32 dimensions"):
        with transaction.atomic():
            write_vectors(ct.id, "w", "id1", rows)
    assert not Embedding.objects.filter(encoder="w").exists()


def test_vectors_go_with_their_content_type():
    """No database constraint on ``content_type``: Django's cascade still removes the rows."""
    ct = ContentType.objects.get_for_model(Article)
    with transaction.atomic():
        write_vectors(ct.id, "w", "id1", make_rows())
    ct.delete()
    ContentType.objects.clear_cache()  # the row comes back with the test's rollback
    assert not Embedding.objects.filter(encoder="w").exists()
