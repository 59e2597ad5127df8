"""Celery tasks: thin adapters around :mod:`embrec.indexing`.

Run encoding workers on their own queue (``EMBREC["QUEUE"]``, default ``embrec``)::

    celery -A project worker -Q embrec --concurrency 1        # one process per GPU
"""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from embrec import indexing

TRANSIENT = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


@shared_task(
    name="embrec.drain",
    acks_late=True,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=8,
    ignore_result=True,
)
def drain_outbox(batch_size: int | None = None, max_seconds: float | None = None) -> dict:
    """Drain the outbox. Idempotent: rows are claimed with SKIP LOCKED and processed once."""
    result = indexing.drain(batch_size=batch_size, max_seconds=max_seconds)
    return {
        "claimed": result.claimed,
        "encoded": result.encoded,
        "failed": result.failed,
    }


@shared_task(name="embrec.sweep", ignore_result=True)
def sweep() -> int:
    """Re-kick outbox rows pending for longer than ``EMBREC["SWEEP_AFTER"]`` seconds."""
    return indexing.sweep()
