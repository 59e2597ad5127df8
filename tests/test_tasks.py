"""Celery tasks with real worker processes over a real Redis broker.

Nothing lost when the broker is down during a save; a worker killed mid-batch has its batch redone
by another; two workers draining one backlog embed every object exactly once.
"""

import json
import time
from io import StringIO

import pytest
import redis
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings

import embrec
from embrec import indexing
from embrec.models import Embedding, OutboxEntry
from embrec.tasks import drain_outbox
from tests.encoders import recorded_texts
from tests.settings import EMBREC as TEST_EMBREC
from tests.testapp.models import Article
from tests.worker import (
    REDIS_URL,
    flush_broker,
    redis_available,
    start_worker,
    stop_worker,
    use_broker,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"
INSTRUMENTED = "tests.encoders.InstrumentedHashingEncoder"


@pytest.fixture(autouse=True)
def _broker():
    assert redis_available(), "Redis must run on 127.0.0.1:6379 (.ci/run starts it)"
    flush_broker()
    yield
    flush_broker()


@pytest.fixture
def workers(tmp_path):
    """Start workers with ``start(name, **encoder_options)``; all are stopped at the end."""
    started = []

    def start(name: str, *, batch_size: int | None = None, **options):
        overrides: dict = {
            "ENCODERS": {
                "hashing": {"CLASS": INSTRUMENTED, "OPTIONS": {"dimensions": 64, **options}}
            }
        }
        if batch_size:
            overrides["BATCH_SIZE"] = batch_size
        (tmp_path / "logs").mkdir(exist_ok=True)
        log = tmp_path / "logs" / f"{name}.log"
        proc = start_worker(
            name=name,
            logfile=log,
            extra_env={"EMBREC_TEST_OVERRIDES": json.dumps(overrides)},
        )
        started.append((proc, log))
        return proc, log

    yield start
    for proc, log in started:
        stop_worker(proc, kill=True)
        if log.exists():
            print(f"--- {log.name}\n{log.read_text()[-2000:]}")


def wait_ready(*logs, timeout: float = 60) -> None:
    wait_for(
        lambda: all(log.exists() and " ready." in log.read_text() for log in logs),
        timeout=timeout,
        message="workers ready",
    )


def article_vectors() -> int:
    return Embedding.objects.filter(content_type=ContentType.objects.get_for_model(Article)).count()


def claimable() -> int:
    """Pending outbox rows no transaction holds right now."""
    with transaction.atomic():
        qs = OutboxEntry.objects.select_for_update(skip_locked=True).filter(state="pending")
        return len(qs.values_list("id", flat=True))


def test_drain_tasks_are_deduplicated_until_a_worker_starts_one():
    broker = redis.Redis.from_url(REDIS_URL)
    with use_broker():
        for i in range(25):  # 25 separate transactions, each kicking after commit
            Article.objects.create(title=f"article {i}")
        assert broker.llen("embrec") == 1
        assert indexing.kick() is False
        assert indexing.kick(force=True) is True  # the sweeper's kick is never suppressed
        assert broker.llen("embrec") == 2
        indexing.release_kick()  # what a worker does when it starts the task
        Article.objects.create(title="after the worker started")
        assert broker.llen("embrec") == 3
    assert OutboxEntry.objects.count() == 26


def test_broker_down_during_save_nothing_is_lost(workers, tmp_path):
    with use_broker(UNREACHABLE_BROKER):
        started = time.monotonic()
        article = Article.objects.create(title="saved while the broker is down")
        assert time.monotonic() - started < 1.5
    assert Article.objects.filter(pk=article.pk).exists()
    assert OutboxEntry.objects.filter(state="pending").count() == 1

    # A worker that connects drains what is pending, without waiting for the sweeper.
    _, log = workers("w1", record_dir=str(tmp_path))
    with use_broker():
        wait_ready(log)
        wait_for(lambda: article_vectors() == 1, timeout=60, message="pending row embedded")
        out = StringIO()
        call_command("embrec_sweep", older_than=0, stdout=out)
        assert "No outbox row pending" in out.getvalue()

        # With the broker up, a save reaches the worker by itself.
        later = Article.objects.create(title="saved with the broker up")
        wait_for(lambda: article_vectors() == 2, timeout=60, message="new save embedded")
    assert Embedding.objects.filter(object_pk=str(later.pk), encoder="hashing").exists()
    assert OutboxEntry.objects.count() == 0
    assert sorted(recorded_texts(tmp_path).popitem()[1]) == [
        "saved while the broker is down",
        "saved with the broker up",
    ]


def test_worker_killed_mid_batch_is_redone_by_another_without_duplicates(workers, tmp_path):
    slow_dir, fast_dir = tmp_path / "slow", tmp_path / "fast"
    slow_dir.mkdir()
    fast_dir.mkdir()
    slow, slow_log = workers("slow", sleep=60, record_dir=str(slow_dir))
    with use_broker():
        wait_ready(slow_log)
        with transaction.atomic():
            titles = [f"batch item {i}" for i in range(20)]
            for title in titles:
                Article.objects.create(title=title)
        # The slow worker has claimed the batch (its rows are locked) and sits in encode().
        wait_for(lambda: claimable() == 0, timeout=60, message="batch claimed")
        time.sleep(0.5)
        stop_worker(slow, kill=True)

        assert article_vectors() == 0
        assert OutboxEntry.objects.filter(state="pending").count() == 20
        # The killed worker's transaction is rolled back: its rows are free again.
        wait_for(lambda: claimable() == 20, timeout=30, message="locks released")

        _, fast_log = workers("fast", record_dir=str(fast_dir))
        wait_ready(fast_log)
        call_command("embrec_sweep", older_than=0, stdout=StringIO())
        wait_for(lambda: OutboxEntry.objects.count() == 0, timeout=60, message="batch redone")

    assert article_vectors() == 20
    assert Embedding.objects.values("object_pk").distinct().count() == 20
    assert recorded_texts(slow_dir) == {}  # killed before it wrote anything
    redone = [text for texts in recorded_texts(fast_dir).values() for text in texts]
    assert sorted(redone) == sorted(titles)


def test_two_workers_drain_5000_items_each_exactly_once(workers, tmp_path):
    with override_settings(EMBREC={**TEST_EMBREC, "AUTO_KICK": False}):
        Article.objects.bulk_create(Article(title=f"item {i:04d}") for i in range(5000))
        assert embrec.mark_dirty(Article.objects.all()) == 5000
    _, log1 = workers("w1", batch_size=100, record_dir=str(tmp_path))
    _, log2 = workers("w2", batch_size=100, record_dir=str(tmp_path))
    with use_broker():
        wait_ready(log1, log2)
        drain_outbox.apply_async(queue="embrec")
        drain_outbox.apply_async(queue="embrec")
        wait_for(
            lambda: OutboxEntry.objects.count() == 0 and article_vectors() == 5000,
            timeout=150,
            message="5000 items embedded",
        )

    per_worker = recorded_texts(tmp_path)
    assert len(per_worker) == 2, "both workers took part"
    assert all(len(texts) > 0 for texts in per_worker.values())
    everything = [text for texts in per_worker.values() for text in texts]
    assert len(everything) == 5000, "nothing encoded twice"
    assert set(everything) == {f"item {i:04d}" for i in range(5000)}, "nothing missed"
    assert Embedding.objects.values("object_pk").distinct().count() == 5000
