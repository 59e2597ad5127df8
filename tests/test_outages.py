"""Outages degrade, they do not hang or 500: broker down, broker back, database down."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from embrec import indexing, tasks
from embrec.models import DrainSignal, Embedding, Interaction, OutboxEntry
from tests.testapp.models import Article
from tests.worker import start_worker, stop_worker, use_broker, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_server(port: int, tmp_path):
    """A private redis-server on ``port`` (no persistence), stopped on exit."""
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _listening(port), timeout=10, message=f"redis on {port}")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.django_db(transaction=True)
def test_save_with_the_broker_down_returns_at_once_and_keeps_the_work():
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with use_broker(url):
        timings = []
        for i in range(3):
            started = time.monotonic()
            article = Article.objects.create(title=f"offline {i}", body="saved while down")
            timings.append(time.monotonic() - started)
            assert OutboxEntry.objects.filter(object_pk=str(article.pk)).exists()
            # The failed publish left no "already queued" mark that would block the next kick.
            assert DrainSignal.objects.filter(queued_at__isnull=False).count() == 0
    print("save with the broker down:", [f"{t:.3f}s" for t in timings])
    assert max(timings) < 1.5, timings


@pytest.mark.django_db(transaction=True)
def test_recording_interactions_with_the_broker_down_returns_at_once():
    article = Article.objects.create(title="liked offline", body="x")
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("fan", password="pw"))
    with use_broker(f"redis://127.0.0.1:{free_port()}/0"):
        started = time.monotonic()
        response = client.post(
            "/api/embrec/interactions/",
            {"type": "testapp.article", "pk": str(article.pk), "kind": "like"},
            format="json",
        )
        elapsed = time.monotonic() - started
    print(f"POST interactions with the broker down: {elapsed:.3f}s")
    assert response.status_code == 201, response.content
    assert elapsed < 1.5, elapsed
    # The interaction is stored; the user's vector is computed when it is read.
    assert Interaction.objects.filter(user__username="fan").count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_embedding_resumes_seconds_after_the_broker_returns(tmp_path, settings):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log = tmp_path / "worker.log"
    with redis_server(port, tmp_path):
        worker = start_worker(broker=url, logfile=log)
        try:
            with use_broker(url):
                first = Article.objects.create(title="before", body="broker up")
                wait_for(
                    lambda: Embedding.objects.filter(object_pk=str(first.pk)).exists(),
                    timeout=120,
                    message="first article embedded",
                )
        except BaseException:
            stop_worker(worker)
            print(log.read_text()[-3000:])
            raise
    try:
        # The broker is down: the save still commits at once, its row waits in the outbox.
        with use_broker(url):
            started = time.monotonic()
            second = Article.objects.create(title="during", body="broker down")
            assert time.monotonic() - started < 1.5
        assert OutboxEntry.objects.filter(object_pk=str(second.pk)).exists()
        assert not Embedding.objects.filter(object_pk=str(second.pk)).exists()
        # The broker comes back; nothing else is saved and no sweeper runs (SWEEP_AFTER 300 s).
        with redis_server(port, tmp_path):
            back = time.monotonic()
            wait_for(
                lambda: Embedding.objects.filter(object_pk=str(second.pk)).exists(),
                timeout=60,
                message="article saved during the outage embedded after the broker returned",
            )
            print(f"embedded {time.monotonic() - back:.1f}s after the broker returned")
            assert OutboxEntry.objects.count() == 0
    finally:
        stop_worker(worker)
        print(log.read_text()[-3000:])


@pytest.mark.django_db(transaction=True)
def test_api_answers_503_with_retry_after_when_the_database_is_down(monkeypatch):
    article = Article.objects.create(title="x", body="y")
    client = APIClient()
    signed_in = APIClient()
    get_user_model().objects.create_user("reader", password="pw")
    assert signed_in.login(username="reader", password="pw")  # a session read on each request
    connection.close()
    # Point the connection at a port nothing listens on.
    monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
    monkeypatch.setitem(connection.settings_dict, "PORT", str(free_port()))
    try:
        for url in [
            f"/api/embrec/items/testapp.article/{article.pk}/similar/",
            "/api/embrec/items/testapp.article/popular/",
            "/api/embrec/search/?type=testapp.article&q=robot",
        ]:
            response = client.get(url)
            assert response.status_code == 503, response.content[:300]
            assert response["Content-Type"] == "application/json"
            assert response.json()["code"] == "unavailable"
            assert int(response["Retry-After"]) > 0
        # Loading the session and the user needs the database too.
        response = signed_in.get("/api/embrec/recommendations/?type=testapp.article")
        assert response.status_code == 503, response.content[:300]
        assert response.json()["code"] == "unavailable"
    finally:
        connection.close()
        monkeypatch.undo()
    assert Article.objects.filter(pk=article.pk).exists()  # back to the real server


@pytest.mark.django_db
def test_tasks_retry_database_errors_with_backoff(monkeypatch):
    calls = []

    def flaky(**kwargs):
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("server closed the connection unexpectedly")
        return 0

    monkeypatch.setattr(indexing, "sweep", flaky)
    # Eager retries run at once, one inside the other; errors must not propagate to see them.
    monkeypatch.setitem(tasks.sweep.app.conf, "task_eager_propagates", False)
    result = tasks.sweep.apply()
    assert result.successful(), result.traceback
    assert len(calls) == 3
    for task in (tasks.drain_outbox, tasks.sweep, tasks.refresh_user_vectors):
        assert OperationalError in task.autoretry_for
        assert task.retry_backoff and 0 < task.max_retries <= 10
