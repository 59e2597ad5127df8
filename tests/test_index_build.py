"""Deferred HNSW index builds for bulk loads (``EMBREC["INDEX_BUILD_THRESHOLD"]``)."""

from io import StringIO

import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings

import embrec
from embrec import indexing
from embrec.encoders import get_encoder
from embrec.models import Embedding, OutboxEntry
from embrec.read import retrieval
from embrec.storage import IndexSpec, index_exists
from tests.settings import EMBREC as TEST_EMBREC
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db

BULK = {**TEST_EMBREC, "AUTO_KICK": False, "INDEX_BUILD_THRESHOLD": 100}


def article_spec() -> IndexSpec:
    ct = ContentType.objects.get_for_model(Article)
    encoder = get_encoder("hashing")
    return IndexSpec(ct.id, "hashing", encoder.dimensions, identity=encoder.identity.as_string())


def create_articles(n: int) -> list[Article]:
    return Article.objects.bulk_create(Article(title=f"article {i} about robots") for i in range(n))


def queue_articles() -> int:
    return indexing.reindex(embrec.registry.get(Article), kick=False)


def vectors() -> int:
    return Embedding.objects.filter(content_type=ContentType.objects.get_for_model(Article)).count()


@override_settings(EMBREC=BULK)
def test_bulk_load_defers_the_index_and_builds_it_when_the_backlog_is_gone():
    create_articles(300)
    assert queue_articles() == 300
    spec = article_spec()
    seen = []

    def after_batch(batch: indexing.DrainResult) -> None:
        seen.append((index_exists(spec), vectors()))

    result = indexing.drain(batch_size=50, on_batch=after_batch)
    # While 100+ rows were pending the batches wrote without the index, and the last batches
    # (fewer pending, but vectors already stored) kept deferring it.
    assert seen == [(False, 50 * i) for i in range(1, 7)]
    assert result.encoded == 300
    assert result.indexes_built == [spec.name]
    assert index_exists(spec)
    assert not OutboxEntry.objects.exists()

    # The similar-items query of the read path runs on the new index. (300 rows are too few for
    # the planner to prefer it on cost, so sequential scans are priced out: the plan shows that
    # the built index matches the query's expression and predicate.)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = retrieval.explain(spec, np.ones(spec.dimensions, dtype=np.float32), 10)
    assert f"Index Scan using {spec.name}" in plan, plan
    assert len(embrec.similar(Article.objects.first(), limit=5)) == 5


@override_settings(EMBREC=BULK)
def test_below_the_threshold_the_index_is_created_before_the_first_write():
    create_articles(60)
    queue_articles()
    spec = article_spec()
    seen = []
    result = indexing.drain(
        batch_size=20, on_batch=lambda batch: seen.append((index_exists(spec), batch.deferred))
    )
    assert seen == [(True, set())] * 3
    assert result.indexes_built == []
    assert vectors() == 60


@override_settings(EMBREC={**BULK, "INDEX_BUILD_THRESHOLD": 0})
def test_threshold_zero_never_defers():
    create_articles(300)
    queue_articles()
    spec = article_spec()
    seen = []
    indexing.drain(batch_size=100, on_batch=lambda batch: seen.append(index_exists(spec)))
    assert seen == [True, True, True]


@override_settings(EMBREC=BULK)
def test_a_drain_stopped_mid_load_leaves_the_index_to_the_next_drain():
    create_articles(300)
    queue_articles()
    spec = article_spec()
    result = indexing.drain(batch_size=50, max_batches=2)
    assert result.deferred == {spec}
    assert result.indexes_built == []
    assert not index_exists(spec)
    # Queries still answer meanwhile (exact scan).
    assert len(embrec.similar(Article.objects.first(), limit=5)) == 5

    result = indexing.drain(batch_size=50)
    assert result.indexes_built == [spec.name]
    assert index_exists(spec)


@override_settings(EMBREC=BULK)
def test_sweeper_builds_an_index_left_missing_once_nothing_is_pending():
    create_articles(300)
    queue_articles()
    spec = article_spec()
    indexing.drain(batch_size=50)
    # The worker that would have built the index died: no index, nothing pending.
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {spec.name}")
    assert not index_exists(spec)

    # Pending rows: a load is under way, the sweeper leaves the index to it.
    Article.objects.create(title="one more")
    assert OutboxEntry.objects.filter(state=OutboxEntry.PENDING).count() == 1
    indexing.sweep(older_than=3600)
    assert not index_exists(spec)

    OutboxEntry.objects.all().delete()
    indexing.sweep(older_than=3600)
    assert index_exists(spec)


def run(*args) -> str:
    out = StringIO()
    call_command("embrec_reindex", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@override_settings(EMBREC=BULK)
def test_reindex_rebuild_index_drops_and_rebuilds(monkeypatch):
    create_articles(30)  # below the threshold: a plain reindex keeps the index
    run("testapp.Article", "--sync")
    spec = article_spec()
    assert index_exists(spec)

    with connection.cursor() as cursor:
        cursor.execute("SELECT oid FROM pg_class WHERE relname = %s", [spec.name])
        old_oid = cursor.fetchone()[0]
    seen = []
    original = indexing.drain_batch

    def watching(size, **options):
        result = original(size, **options)
        if result is not None:
            seen.append(index_exists(spec))
        return result

    monkeypatch.setattr(indexing, "drain_batch", watching)
    out = run("testapp.Article", "--sync", "--force", "--rebuild-index", "--batch-size", "10")
    assert f"dropped index {spec.name}" in out
    assert f"Built index(es) after the load: {spec.name}" in out
    # No batch wrote with the index: it was built once, after the load.
    assert seen == [False, False, False]
    assert index_exists(spec)
    with connection.cursor() as cursor:
        cursor.execute("SELECT oid FROM pg_class WHERE relname = %s", [spec.name])
        assert cursor.fetchone()[0] != old_oid
    assert vectors() == 30


@override_settings(EMBREC=BULK)
def test_rebuild_index_without_anything_to_encode_still_rebuilds():
    create_articles(30)
    run("testapp.Article", "--sync")
    spec = article_spec()
    out = run("testapp.Article", "--sync", "--rebuild-index")
    assert f"Built index(es) after the load: {spec.name}" in out
    assert index_exists(spec)


def _write_random_vectors(n: int, dims: int) -> IndexSpec:
    from embrec.storage import VectorRow, write_vectors

    ct = ContentType.objects.get_for_model(Article)
    rng = np.random.default_rng(0)
    rows = [VectorRow(str(i), v, "h") for i, v in enumerate(rng.standard_normal((n, dims)))]
    with transaction.atomic():
        write_vectors(ct.id, "sized", "sized@1", rows)
    return IndexSpec(ct.id, "sized", dims)


@pytest.mark.parametrize(
    ("memory", "warned"), [("1MB", True), ("64MB", False)], ids=["too-small", "enough"]
)
def test_a_build_whose_graph_will_not_fit_says_so(memory, warned, caplog):
    from embrec.storage import build_index, hnsw_build_memory

    spec = _write_random_vectors(2_000, 8)
    assert hnsw_build_memory(2_000, 8) > 2**20  # the estimate itself: ~1.5 MB
    with override_settings(EMBREC={**TEST_EMBREC, "INDEX_BUILD_MAINTENANCE_WORK_MEM": memory}):
        with caplog.at_level("WARNING", logger="embrec.storage"):
            assert build_index(spec)
    assert index_exists(spec)  # built either way, only slower
    messages = [r.getMessage() for r in caplog.records if r.name == "embrec.storage"]
    if warned:
        assert len(messages) == 1
        assert "2000 vectors" in messages[0] and "INDEX_BUILD_MAINTENANCE_WORK_MEM" in messages[0]
    else:
        assert messages == []
