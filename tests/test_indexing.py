"""The write path in-process: outbox rows from saves, draining, hashing, failures, mark_dirty."""

import numpy as np
import pytest
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import override_settings

import embrec
from embrec import indexing, switching
from embrec.encoders import get_encoder
from embrec.models import DrainSignal, Embedding, OutboxEntry
from embrec.registry import registry
from embrec.versions import live_identity
from tests.encoders import recorded_texts
from tests.settings import EMBREC as TEST_EMBREC
from tests.testapp.models import Article, Note

pytestmark = pytest.mark.django_db

INSTRUMENTED = "tests.encoders.InstrumentedHashingEncoder"


def instrumented(**options):
    """EMBREC with the test models' encoder swapped for the instrumented one (same vectors)."""
    return {
        "ENCODERS": {
            **TEST_EMBREC["ENCODERS"],
            "hashing": {"CLASS": INSTRUMENTED, "OPTIONS": {"dimensions": 64, **options}},
        }
    }


def vector_of(obj, encoder="hashing") -> Embedding:
    """The vector queries read: the live version's (the only one before any is registered)."""
    ct = ContentType.objects.get_for_model(obj)
    rows = Embedding.objects.filter(content_type=ct, object_pk=str(obj.pk), encoder=encoder)
    identity = live_identity(encoder)
    return rows.get(identity=identity) if identity else rows.get()


def has_vector(obj, encoder="hashing") -> bool:
    ct = ContentType.objects.get_for_model(obj)
    return Embedding.objects.filter(
        content_type=ct, object_pk=str(obj.pk), encoder=encoder
    ).exists()


def encoded(record_dir) -> list[str]:
    return [text for texts in recorded_texts(record_dir).values() for text in texts]


def test_save_writes_an_outbox_row_in_the_same_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        Article.objects.create(title="rolled back")
        assert OutboxEntry.objects.count() == 1
        raise RuntimeError
    assert OutboxEntry.objects.count() == 0

    article = Article.objects.create(title="kept")
    entry = OutboxEntry.objects.get()
    assert (entry.object_pk, entry.action, entry.state) == (str(article.pk), "index", "pending")


def test_save_is_embedded_after_commit(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            a = Article.objects.create(title="Red apple pie", body="Baked with cinnamon")
            b = Article.objects.create(title="Green apple tart")
    # One drain task per transaction, however many objects it saved.
    assert [c.__name__ for c in callbacks].count("_kick_after_commit") == 1
    emb = vector_of(a)
    expected = get_encoder("hashing").encode(["Red apple pie. Baked with cinnamon"])[0]
    np.testing.assert_allclose(emb.vector, expected, rtol=1e-6)
    assert emb.dimensions == 64
    assert emb.identity == get_encoder("hashing").identity.as_string()
    assert emb.content_hash == registry.get(Article).content_hash(
        "Red apple pie. Baked with cinnamon"
    )
    assert has_vector(b)
    assert OutboxEntry.objects.count() == 0
    assert DrainSignal.objects.get().queued_at is None


def test_changed_text_changes_the_vector():
    article = Article.objects.create(title="Red apple pie")
    indexing.drain()
    before = vector_of(article)
    article.title = "Blue whale migration"
    article.save()
    result = indexing.drain()
    assert result.encoded == 1
    after = vector_of(article)
    assert after.content_hash != before.content_hash
    assert not np.allclose(after.vector, before.vector)
    np.testing.assert_allclose(
        after.vector, get_encoder("hashing").encode(["Blue whale migration"])[0], rtol=1e-6
    )


def test_unchanged_save_is_not_encoded(tmp_path):
    with override_settings(EMBREC=instrumented(record_dir=str(tmp_path))):
        article = Article.objects.create(title="Same text")
        indexing.drain()
        assert encoded(tmp_path) == ["Same text"]
        article.price = 12  # not part of the text
        article.save()
        result = indexing.drain()
        assert (result.claimed, result.encoded, result.unchanged) == (1, 0, 1)
        assert encoded(tmp_path) == ["Same text"]
        # force=True re-encodes anyway.
        embrec.mark_dirty([article], force=True)
        assert indexing.drain().encoded == 1
        assert encoded(tmp_path) == ["Same text", "Same text"]


def test_an_object_saved_many_times_is_encoded_once(tmp_path):
    with override_settings(EMBREC=instrumented(record_dir=str(tmp_path))):
        article = Article.objects.create(title="v0")
        for i in range(1, 6):
            article.title = f"v{i}"
            article.save()
        assert OutboxEntry.objects.count() == 6
        # A batch of one still takes every pending row of that object.
        result = indexing.drain(batch_size=1)
        assert result.batches == 1 and result.claimed == 6
        assert encoded(tmp_path) == ["v5"]
    assert OutboxEntry.objects.count() == 0


def test_delete_removes_vectors():
    article = Article.objects.create(title="to delete")
    keep = Article.objects.create(title="to keep")
    indexing.drain()
    pk = article.pk
    article.delete()
    entry = OutboxEntry.objects.get()
    assert (entry.object_pk, entry.action) == (str(pk), "delete")
    assert indexing.drain().deleted == 1
    assert not Embedding.objects.filter(object_pk=str(pk)).exists()
    assert has_vector(keep)


def test_objects_leaving_the_queryset_lose_their_vectors():
    article = Article.objects.create(title="public")
    indexing.drain()
    article.published = False  # ArticleRecommendable.get_queryset() keeps published ones only
    article.save()
    indexing.drain()
    assert not has_vector(article)


def test_should_index_veto(monkeypatch):
    rec = registry.get(Article)
    monkeypatch.setattr(rec, "should_index", lambda obj: "draft" not in obj.title)
    ok = Article.objects.create(title="final")
    draft = Article.objects.create(title="draft version")
    indexing.drain()
    assert has_vector(ok) and not has_vector(draft)


def test_mark_dirty_after_queryset_update():
    articles = [Article.objects.create(title=f"old {i}", category="a") for i in range(3)]
    other = Article.objects.create(title="other", category="b")
    indexing.drain()
    before = {a.pk: vector_of(a).content_hash for a in articles}

    Article.objects.filter(category="a").update(title="new title")  # no signals
    assert OutboxEntry.objects.count() == 0
    assert embrec.mark_dirty(Article.objects.filter(category="a")) == 3
    assert OutboxEntry.objects.count() == 3
    result = indexing.drain()
    assert result.encoded == 3
    for a in articles:
        assert vector_of(a).content_hash != before[a.pk]
        assert vector_of(a).content_hash == registry.get(Article).content_hash("new title")
    assert has_vector(other)


def test_mark_dirty_after_bulk_create_and_with_instances():
    created = Article.objects.bulk_create([Article(title=f"bulk {i}") for i in range(250)])
    notes = Note.objects.bulk_create([Note(slug="n-1", text="a note"), Note(slug="n-2", text="b")])
    assert OutboxEntry.objects.count() == 0
    # Querysets are read by keyset pages of batch_size pks.
    assert embrec.mark_dirty(Article.objects.all(), batch_size=100) == 250
    assert embrec.mark_dirty(notes) == 2
    indexing.drain(batch_size=64)
    ct = ContentType.objects.get_for_model(Article)
    assert Embedding.objects.filter(content_type=ct).count() == 250
    assert has_vector(created[-1])
    assert has_vector(Note.objects.get(slug="n-2"))


def test_mark_dirty_errors_are_clear():
    with pytest.raises(embrec.NotRegistered):
        embrec.mark_dirty(Group.objects.all())
    with pytest.raises(ImproperlyConfigured, match="does not use encoder 'glove'"):
        embrec.mark_dirty(Article.objects.all(), encoder="glove")


def test_poison_item_is_isolated_and_the_rest_written():
    with override_settings(EMBREC=instrumented(poison="POISON")):
        good = [Article.objects.create(title=f"fine article {i}") for i in range(6)]
        bad = Article.objects.create(title="a POISON pill")
        result = indexing.drain()
        assert result.failed == 1 and result.encoded == 6
        assert all(has_vector(a) for a in good)
        assert not has_vector(bad)
        failure = OutboxEntry.objects.get()
        assert failure.object_pk == str(bad.pk)
        assert failure.state == OutboxEntry.FAILED
        assert "POISON" in failure.last_error and "ValueError" in failure.last_error
        assert failure.attempts == 1
        # Failed rows are not claimed again.
        assert indexing.drain().claimed == 0

        # Once fixed, the object is embedded and its failure record goes away.
        bad.title = "an antidote"
        bad.save()
        indexing.drain()
        assert has_vector(bad)
        assert OutboxEntry.objects.count() == 0


def test_non_finite_vectors_fail_their_item_only():
    with override_settings(EMBREC=instrumented(nan_on="overflow")):
        ok = Article.objects.create(title="regular")
        bad = Article.objects.create(title="overflow")
        result = indexing.drain()
    assert (result.encoded, result.failed) == (1, 1)
    assert has_vector(ok) and not has_vector(bad)
    assert "NaN" in OutboxEntry.objects.get(state="failed").last_error
    # After fixing the cause, retrying resets the attempt count and embeds it.
    assert indexing.retry_failed() == 1
    assert OutboxEntry.objects.get().attempts == 0
    indexing.drain()
    assert has_vector(bad)


def test_get_text_errors_are_isolated_too(monkeypatch):
    rec = registry.get(Article)

    def get_text(obj):
        if obj.title == "broken":
            raise KeyError("missing translation")
        return obj.title

    monkeypatch.setattr(rec, "get_text", get_text)
    ok = Article.objects.create(title="fine")
    Article.objects.create(title="broken")
    assert indexing.drain().failed == 1
    assert has_vector(ok)
    assert "missing translation" in OutboxEntry.objects.get(state="failed").last_error


def test_an_encoder_failing_on_everything_is_retried_then_failed():
    with override_settings(EMBREC={**instrumented(poison="x"), "MAX_ATTEMPTS": 2}):
        Article.objects.create(title="x one")
        Article.objects.create(title="x two")
        with pytest.raises(RuntimeError, match="failed on every item"):
            indexing.drain()
        assert list(OutboxEntry.objects.values_list("state", "attempts")) == [("pending", 1)] * 2
        with pytest.raises(RuntimeError):
            indexing.drain()
        assert set(OutboxEntry.objects.values_list("state", "attempts")) == {("failed", 2)}
        assert indexing.drain().claimed == 0


def test_a_new_encoder_identity_makes_vectors_stale_and_they_are_reencoded(tmp_path):
    articles = [Article.objects.create(title=f"article {i}") for i in range(3)]
    indexing.drain()
    rec = registry.get(Article)
    assert indexing.status(rec, "hashing")["stale"] == 0
    old_identity = vector_of(articles[0]).identity
    smaller = {
        "ENCODERS": {
            **TEST_EMBREC["ENCODERS"],
            "hashing": {"CLASS": INSTRUMENTED, "OPTIONS": {"dimensions": 32}},
        }
    }
    with override_settings(EMBREC=smaller):
        assert indexing.status(rec, "hashing")["stale"] == 3
        embrec.mark_dirty(Article.objects.all())
        result = indexing.drain()
        # Same text, other identity: encoded for the new (pending) version, beside the live
        # vectors, which are unchanged.
        assert (result.encoded, result.unchanged) == (3, 3)
        status = indexing.status(rec, "hashing")
        assert (status["live"], status["next_embedded"], status["progress"]) == (
            old_identity,
            3,
            100.0,
        )
        assert vector_of(articles[0]).identity == old_identity  # what queries read
        switching.after_drain()  # the drain task's step: queue the backfill, switch once done
        indexing.drain()
        assert switching.after_drain()
        status = indexing.status(rec, "hashing")
        assert (status["stale"], status["next"]) == (0, None)
        emb = vector_of(articles[0])
        assert emb.dimensions == 32 and emb.identity == status["live"] != old_identity


def test_several_encoders_side_by_side():
    @embrec.register(Group)
    class GroupRecommendable(embrec.Recommendable):
        fields = ["name"]
        encoders = ["hashing", "glove"]

    try:
        group = Group.objects.create(name="cooking and baking")
        indexing.drain()
        assert vector_of(group, "hashing").dimensions == 64
        glove = vector_of(group, "glove")
        assert glove.dimensions == 50 and glove.identity.startswith("glove-6b-50d@")
        # One encoder only: the other's vector is untouched.
        before = vector_of(group, "hashing").updated_at
        embrec.mark_dirty([group], encoder="glove", force=True)
        result = indexing.drain()
        assert result.encoded == 1
        assert vector_of(group, "hashing").updated_at == before
        group.delete()
        indexing.drain()
        assert not has_vector(group, "hashing") and not has_vector(group, "glove")
    finally:
        embrec.unregister(Group)


def test_rows_of_unregistered_models_remove_their_vectors():
    @embrec.register(Group)
    class GroupRecommendable(embrec.Recommendable):
        fields = ["name"]
        encoders = ["hashing"]

    try:
        group = Group.objects.create(name="temporary")
        indexing.drain()
        assert has_vector(group)
        embrec.mark_dirty([group])
    finally:
        embrec.unregister(Group)
    indexing.drain()
    assert not has_vector(group)


def test_string_primary_keys():
    note = Note.objects.create(slug="hello-world", text="Hello world")
    indexing.drain()
    assert vector_of(note).object_pk == "hello-world"
    note.delete()
    indexing.drain()
    assert not Embedding.objects.exists()


def test_reindex_enqueues_by_keyset_and_queues_removal_of_orphans():
    articles = [Article.objects.create(title=f"a{i}") for i in range(5)]
    indexing.drain()
    Article.objects.filter(pk=articles[0].pk)._raw_delete("default")  # no signals
    seen = []
    count = indexing.reindex(registry.get(Article), batch_size=2, progress=seen.append)
    assert count == 4 and seen == [2, 2]
    result = indexing.drain()
    assert (result.unchanged, result.deleted) == (4, 1)
    assert not has_vector(articles[0])


def test_sweep_rekicks_old_rows_and_retry_failed(django_capture_on_commit_callbacks):
    with override_settings(EMBREC={**TEST_EMBREC, "AUTO_KICK": False}):
        article = Article.objects.create(title="waiting")
    assert indexing.sweep(older_than=3600) == 0
    assert OutboxEntry.objects.filter(state="pending").count() == 1
    # Eager Celery in tests: the kick runs the drain at once.
    assert indexing.sweep(older_than=0) == 1
    assert has_vector(article)

    OutboxEntry.objects.create(
        content_type=ContentType.objects.get_for_model(Article),
        object_pk=str(article.pk),
        state=OutboxEntry.FAILED,
        last_error="boom",
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert indexing.retry_failed() == 1
    assert OutboxEntry.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_two_drains_holding_rows_of_one_object_never_write_an_older_text_last(tmp_path):
    """Worker A holds the row of an old save and encodes slowly; the object is saved again and
    worker B takes the new row. B must wait for A, then write the new text's vector."""
    import threading
    import time

    from django.db import connection

    mark = tmp_path / "encoding-old-text"
    slow_old = instrumented(sleep=1.5, sleep_on="old", sleep_mark=str(mark))
    with override_settings(EMBREC={**slow_old, "AUTO_KICK": False}):
        Article.objects.create(title="warm up")
        indexing.drain()  # the HNSW index exists: creating it would serialise A and B anyway
        article = Article.objects.create(title="old text")
        results = {}

        def worker_a():
            try:
                results["a"] = indexing.drain(batch_size=1)
            finally:
                connection.close()

        thread = threading.Thread(target=worker_a)
        thread.start()

        def claimable() -> int:
            with transaction.atomic():
                qs = OutboxEntry.objects.select_for_update(skip_locked=True)
                return len(qs.values_list("id", flat=True))

        # Polling with a locking query could make A skip the row; the encoder marks the moment
        # A, inside its claim transaction, starts encoding the old text.
        deadline = time.monotonic() + 30
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mark.exists(), "worker A encodes the old text"
        assert claimable() == 0, "worker A holds the first row"

        article.title = "new text"
        article.save()
        results["b"] = indexing.drain()  # worker B: blocks on A's object lock, then proceeds
        thread.join(timeout=30)

    assert results["a"].encoded == 1 and results["b"].encoded == 1
    emb = vector_of(article)
    assert emb.content_hash == registry.get(Article).content_hash("new text")
    assert OutboxEntry.objects.count() == 0
