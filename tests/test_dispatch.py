"""embrec.dispatch: tasks sent by name, routed by task_routes or EMBREC["QUEUE"], broker
failures turned into a warning."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from celery import current_app

from embrec import dispatch
from tests.worker import use_broker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_name_is_a_registered_task():
    names = [value for key, value in vars(dispatch).items() if key.isupper()]
    assert len(names) >= 10
    assert set(names) <= set(current_app.tasks)


def test_a_route_that_names_the_task_wins_otherwise_embrec_queue(settings):
    settings.EMBREC = {**settings.EMBREC, "QUEUE": "embrec.encode"}
    saved = current_app.conf.task_routes
    try:
        current_app.conf.task_routes = None
        assert dispatch.queue_options(dispatch.DRAIN) == {"queue": "embrec.encode"}
        current_app.conf.task_routes = {dispatch.REFRESH_USER_VECTORS: {"queue": "users"}}
        assert dispatch.queue_options(dispatch.REFRESH_USER_VECTORS) == {}
        assert dispatch.queue_options(dispatch.DRAIN) == {"queue": "embrec.encode"}
    finally:
        current_app.conf.task_routes = saved


@pytest.mark.django_db
def test_eager_mode_runs_the_task_in_process():
    # The refresh of a user without interactions writes nothing and returns 0.
    assert dispatch.send(dispatch.REFRESH_USER_VECTORS, [10**9, None], what="a refresh") is True


def test_a_broker_that_is_down_is_a_warning_within_kick_timeout(settings, caplog):
    settings.EMBREC = {**settings.EMBREC, "KICK_TIMEOUT": 0.3}
    with use_broker(f"redis://127.0.0.1:{free_port()}/0"):  # nothing listens there
        with pytest.raises(Exception):  # noqa: B017 (kombu's connection error, by transport)
            dispatch.publish(dispatch.SWEEP)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="embrec"):
            sent = dispatch.send(
                dispatch.SWEEP, what="a sweep", meanwhile="cron runs embrec_sweep instead"
            )
        elapsed = time.monotonic() - started
    assert sent is False
    assert elapsed < 1.5, elapsed
    messages = [r.getMessage() for r in caplog.records if r.name == "embrec"]
    assert len(messages) == 1, messages
    assert messages[0].startswith("embrec: could not queue a sweep (")
    assert messages[0].endswith("; cron runs embrec_sweep instead.")
