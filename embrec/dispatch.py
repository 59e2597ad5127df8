"""Sending embrec's Celery tasks: the one module of the core that talks to the broker.

The core (:mod:`embrec.indexing`, :mod:`embrec.interactions`) never imports :mod:`embrec.tasks`;
it sends tasks by name through the current Celery app (the project's own, see the ``embrec.E014``
system check). Tasks go to the queue Celery's ``task_routes`` name for them, otherwise to
``EMBREC["QUEUE"]``.

Saves and interactions send after their transaction commits, so a send must not hold a request
while the broker is down: :func:`publish` waits for it at most ``EMBREC["KICK_TIMEOUT"]`` seconds
(one connection attempt, no retries) and :func:`send` turns a failure into a warning, because the
database keeps the work (outbox rows, stale user vectors) and workers or the sweeper catch up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from celery import current_app
from celery.app.routes import prepare as prepare_routes

from embrec.conf import embrec_settings

logger = logging.getLogger("embrec")

#: Names of embrec's tasks (defined in :mod:`embrec.tasks`).
DRAIN = "embrec.drain"
SWEEP = "embrec.sweep"
REFRESH_USER_VECTORS = "embrec.refresh_user_vectors"
REFRESH_USER_VECTORS_FOR_ITEMS = "embrec.refresh_user_vectors_for_items"
TRAIN_ITEM2VEC = "embrec.train_item2vec"
FINETUNE = "embrec.finetune"
EMBEDDING_MAP = "embrec.embedding_map"
REBUILD_POPULARITY = "embrec.rebuild_popularity"
CLUSTERS = "embrec.clusters"
DUPLICATES = "embrec.duplicates"


def queue_options(name: str) -> dict[str, Any]:
    """``apply_async`` options for the embrec task ``name``: Celery's ``task_routes`` decide when
    they name the task (e.g. ``CELERY_TASK_ROUTES = {"embrec.drain": {"queue": "embrec.encode"}}``),
    otherwise it goes to ``EMBREC["QUEUE"]``."""
    app = current_app._get_current_object()
    task = app.tasks.get(name)
    for router in prepare_routes(app.conf.task_routes):
        if router(name, (), {}, {}, task=task) is not None:
            return {}
    return {"queue": embrec_settings.QUEUE}


def publish(name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> None:
    """Queue the task ``name`` (on the queue :func:`queue_options` picks), waiting for the broker
    at most ``EMBREC["KICK_TIMEOUT"]`` seconds; raises when it cannot.

    kombu's usual publish retries the connection for several seconds. Here one connection is
    opened without retries and with short socket timeouts (the app's other broker settings are
    kept). Eager mode (``task_always_eager``) runs the task in-process.
    """
    app = current_app._get_current_object()
    task = app.tasks[name]
    options = queue_options(name)
    if app.conf.task_always_eager:
        task.apply_async(args=list(args), kwargs=dict(kwargs or {}), **options)
        return
    timeout = float(embrec_settings.KICK_TIMEOUT)
    transport = {
        **(app.conf.broker_transport_options or {}),
        "max_retries": 0,
        # Redis; AMQP uses connect_timeout below.
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
    }
    with app.connection_for_write(transport_options=transport, connect_timeout=timeout) as conn:
        task.apply_async(
            args=list(args), kwargs=dict(kwargs or {}), retry=False, connection=conn, **options
        )


def send(
    name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    what: str,
    meanwhile: str = "",
) -> bool:
    """:func:`publish`, but a broker that is down or misconfigured is logged, not raised.

    ``what`` names the task in the warning ("a drain task"), ``meanwhile`` says who does the work
    instead. Returns whether the task was queued.
    """
    try:
        publish(name, args, kwargs)
    except Exception as exc:  # broker down or misconfigured: the database keeps the work
        logger.warning(
            "embrec: could not queue %s (%s)%s.", what, exc, f"; {meanwhile}" if meanwhile else ""
        )
        return False
    return True
