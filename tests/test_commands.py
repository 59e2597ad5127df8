"""Management commands: embrec_reindex, embrec_status, embrec_sweep, embrec_drain."""

import json
from io import StringIO

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from embrec import indexing
from embrec.encoders import get_encoder
from embrec.models import Embedding, OutboxEntry
from tests.settings import EMBREC as TEST_EMBREC
from tests.testapp.models import Article, Note

pytestmark = pytest.mark.django_db

NO_KICK = {**TEST_EMBREC, "AUTO_KICK": False}


def run(name: str, *args, **options) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def status(*labels) -> dict[tuple[str, str], dict]:
    rows = json.loads(run("embrec_status", *labels, "--json"))
    return {(row["model"], row["encoder"]): row for row in rows}


@pytest.fixture
def articles():
    with override_settings(EMBREC=NO_KICK):
        objs = Article.objects.bulk_create(Article(title=f"article {i}") for i in range(30))
        Article.objects.bulk_create([Article(title="hidden", published=False)])
    return objs


def article_vectors() -> int:
    return Embedding.objects.filter(content_type=ContentType.objects.get_for_model(Article)).count()


def test_reindex_sync_embeds_with_progress_bar_and_summary(articles):
    out = run("embrec_reindex", "testapp.Article", "--sync", "--batch-size", "8")
    assert "queue testapp.article [" in out and "30/30 100%" in out
    assert "encode [" in out
    assert "testapp.article: 30 object(s) queued." in out
    assert "30 vector(s) written, 0 unchanged, 0 removed, 0 failed" in out
    assert article_vectors() == 30
    assert OutboxEntry.objects.count() == 0

    again = run("embrec_reindex", "testapp.article", "--sync")
    assert "0 vector(s) written, 30 unchanged" in again
    forced = run("embrec_reindex", "testapp.article", "--sync", "--force")
    assert "30 vector(s) written, 0 unchanged" in forced


def test_reindex_without_sync_queues_work_for_workers(articles):
    with override_settings(EMBREC=NO_KICK):
        out = run("embrec_reindex", "testapp.article", "--encoder", "hashing")
    assert "Queued 30 object(s); workers on queue 'embrec'" in out
    assert OutboxEntry.objects.filter(state="pending", encoder="hashing").count() == 30
    assert article_vectors() == 0


def test_reindex_all_registered_models_removes_orphans():
    with override_settings(EMBREC=NO_KICK):
        gone = Article.objects.create(title="soon gone")
        Note.objects.create(slug="n", text="note")
    indexing.drain()
    Article.objects.filter(pk=gone.pk)._raw_delete("default")  # behind the signals' back
    # The demo's Movie registration is included but has no objects: nothing loads MiniLM.
    out = run("embrec_reindex", "--sync")
    assert "catalog.movie: 0 object(s) queued." in out
    assert "testapp.note: 1 object(s) queued." in out
    assert "1 removed" in out
    assert article_vectors() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["testapp.Nope"], "testapp.nope is not registered"),
        (["article"], "not a model label"),
        (["auth.Group"], "auth.group is not registered"),
        (["testapp.Article", "--encoder", "glove"], "Encoder 'glove' is not used by: testapp"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_reindex_bad_input_is_a_command_error(args, message):
    with pytest.raises(CommandError, match=message):
        run("embrec_reindex", *args)


def test_status_counts_objects_embedded_stale_pending_failed(articles):
    run("embrec_reindex", "testapp.article", "--sync")
    row = status("testapp.article")[("testapp.article", "hashing")]
    assert row == {
        "model": "testapp.article",
        "encoder": "hashing",
        "objects": 30,
        "embedded": 30,
        "stale": 0,
        "pending": 0,
        "failed": 0,
        "live": get_encoder("hashing").identity.as_string(),
        "next": None,
        "next_embedded": None,
        "progress": None,
    }
    with override_settings(EMBREC=NO_KICK):
        articles[0].title = "changed"
        articles[0].save()
        articles[1].save()
        articles[1].save()  # two rows, one object
    OutboxEntry.objects.create(
        content_type=ContentType.objects.get_for_model(Article),
        object_pk=str(articles[2].pk),
        state=OutboxEntry.FAILED,
        last_error="boom",
    )
    Embedding.objects.filter(object_pk__in=[str(a.pk) for a in articles[:5]]).update(
        identity="old-model@1/64/norm"
    )
    row = status("testapp.article")[("testapp.article", "hashing")]
    assert (row["pending"], row["failed"], row["stale"]) == (2, 1, 5)

    table = run("embrec_status", "testapp.article", "testapp.note")
    lines = table.splitlines()
    assert lines[0].split() == [
        "model",
        "encoder",
        "objects",
        "embedded",
        "stale",
        "pending",
        "failed",
        "live",
        "next",
        "progress",
    ]
    live = get_encoder("hashing").identity.as_string()
    # Queries read the 25 vectors of the live identity; the 5 others are stale.
    assert lines[2].split() == [
        "testapp.article",
        "hashing",
        "30",
        "25",
        "5",
        "2",
        "1",
        live,
        "-",
        "-",
    ]
    assert lines[3].split() == ["testapp.note", "hashing", "0", "0", "0", "0", "0", live, "-", "-"]


def test_status_unknown_label_is_a_command_error():
    with pytest.raises(CommandError, match="not registered"):
        run("embrec_status", "testapp.Nope")


def test_sweep_command_rekicks_old_rows(articles):
    with override_settings(EMBREC=NO_KICK):
        Article.objects.create(title="waiting")
    assert "No outbox row pending for more than 300s." in run("embrec_sweep")
    # Eager Celery in tests: the drain task runs at once.
    out = run("embrec_sweep", "--older-than", "0")
    assert "1 outbox row(s) pending for more than 0s; drain task queued." in out
    assert OutboxEntry.objects.count() == 0
    with pytest.raises(CommandError, match="must not be negative"):
        run("embrec_sweep", "--older-than", "-1")


def test_sweep_retry_failed(articles):
    OutboxEntry.objects.create(
        content_type=ContentType.objects.get_for_model(Article),
        object_pk=str(articles[0].pk),
        state=OutboxEntry.FAILED,
        last_error="boom",
    )
    with override_settings(EMBREC=NO_KICK):
        out = run("embrec_sweep", "--retry-failed")
    assert "1 failed row(s) put back to pending." in out
    assert OutboxEntry.objects.get().state == OutboxEntry.PENDING


def test_drain_command(articles):
    with override_settings(EMBREC=NO_KICK):
        indexing.mark_dirty(Article.objects.filter(published=True))
    out = run("embrec_drain", "--batch-size", "10", "--max-batches", "2")
    assert "2 batch(es), 20 row(s)" in out and "10 still pending" in out
    out = run("embrec_drain")
    assert "10 written" in out and "0 still pending" in out
    assert article_vectors() == 30
    with pytest.raises(CommandError, match="--max-batches must be at least 1"):
        run("embrec_drain", "--max-batches", "0")
