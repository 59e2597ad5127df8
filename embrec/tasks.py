"""Celery tasks: thin adapters around :mod:`embrec.indexing`.

Run encoding workers on their own queue (``EMBREC["QUEUE"]``, default ``embrec``), one process per
GPU::

    celery -A project worker -Q embrec --concurrency 1

Tasks take only primitives, re-read everything from the database, and are idempotent: the outbox
rows are the unit of work, claimed with ``SKIP LOCKED`` and deleted in the same transaction as the
vectors they produce, so a redelivered or duplicated task finds nothing left to do.
"""

from __future__ import annotations

import logging

from celery import bootsteps, shared_task
from celery.signals import celeryd_init
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, InterfaceError, OperationalError

from embrec import clusters as clustering
from embrec import dispatch, indexing, interactions, popularity, switching, training
from embrec import duplicates as near_duplicates
from embrec import embedding_map as maps
from embrec.conf import embrec_settings
from embrec.exceptions import AnalysisError
from embrec.models import OutboxEntry
from embrec.registry import NotRegistered, registry

logger = logging.getLogger("embrec")

#: Errors worth retrying with backoff: the database or the network blinked.
TRANSIENT = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


@shared_task(
    name=dispatch.DRAIN,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=8,
    ignore_result=True,
)
def drain_outbox(batch_size: int | None = None, max_seconds: float | None = None) -> dict:
    """Drain the outbox until it is empty (or ``max_seconds`` have passed).

    While batches come back full, one more drain task is queued (deduplicated), so that idle
    workers join in on a large backlog; they stop as soon as the outbox is empty.
    """
    indexing.release_kick()
    size = int(batch_size or embrec_settings.BATCH_SIZE)

    def fan_out(batch: indexing.DrainResult) -> None:
        if batch.claimed >= size and not drain_outbox.app.conf.task_always_eager:
            indexing.kick()

    result = indexing.drain(batch_size=size, max_seconds=max_seconds, on_batch=fan_out)
    # A pending encoder version registered by this drain gets its backfill queued; one whose
    # backfill this drain completed goes live (EMBREC["VERSION_AUTO_SWITCH"]).
    switching.after_drain()
    return {
        "batches": result.batches,
        "claimed": result.claimed,
        "encoded": result.encoded,
        "unchanged": result.unchanged,
        "deleted": result.deleted,
        "failed": result.failed,
    }


@shared_task(
    name=dispatch.SWEEP,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
    ignore_result=True,
)
def sweep() -> int:
    """Re-kick outbox rows pending for longer than ``EMBREC["SWEEP_AFTER"]`` seconds, move
    the popularity window forward (:func:`embrec.popularity.expire_popularity`), and start,
    switch and prune encoder versions that are due (:func:`embrec.switching.sweep`)."""
    count = indexing.sweep()
    popularity.expire_popularity()
    switching.sweep()
    return count


@shared_task(
    name=dispatch.REBUILD_POPULARITY,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=3,
    ignore_result=True,
)
def rebuild_popularity() -> dict:
    """Recount the popularity tables from the interaction table
    (:func:`embrec.popularity.rebuild_popularity`). Idempotent."""
    return popularity.rebuild_popularity()


class DrainOnConnect(bootsteps.StartStopStep):
    """Worker consumer step: each time the worker (re)connects to the broker, queue a drain if
    outbox rows are pending.

    Saves made while the broker was down could not queue a task; their rows are drained seconds
    after the broker is back instead of when the sweeper next finds them (``SWEEP_AFTER``).
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def start(self, consumer) -> None:
        try:
            if OutboxEntry.objects.filter(state=OutboxEntry.PENDING).exists():
                indexing.kick(force=True)
        except DatabaseError as exc:  # the database is down too: the sweeper catches up
            logger.warning("embrec: could not check the outbox on connect (%s).", exc)


@celeryd_init.connect
def _add_drain_on_connect(sender=None, instance=None, **kwargs) -> None:
    if instance is not None and DrainOnConnect not in instance.app.steps["consumer"]:
        instance.app.steps["consumer"].add(DrainOnConnect)


# --------------------------------------------------------------------------- user vectors


@shared_task(
    name=dispatch.REFRESH_USER_VECTORS,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=5,
    ignore_result=True,
)
def refresh_user_vectors(user_id, content_type_id: int | None = None) -> int:
    """Recompute one user's vectors (after new interactions). Idempotent."""
    model = None
    if content_type_id is not None:
        model = ContentType.objects.get_for_id(content_type_id).model_class()
        if model is None or not registry.is_registered(model):
            return 0
    return interactions.refresh_user_vector(user_id, model)


@shared_task(
    name=dispatch.REFRESH_USER_VECTORS_FOR_ITEMS,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=5,
    ignore_result=True,
)
def refresh_user_vectors_for_items(content_type_id: int, encoder: str, object_pks: list) -> int:
    """Recompute the vectors of users who interacted with re-embedded items. Idempotent."""
    return interactions.refresh_for_items(content_type_id, encoder, object_pks)


@shared_task(
    name=dispatch.TRAIN_ITEM2VEC,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=3,
    ignore_result=True,
)
def train_item2vec(alias: str = "item2vec", reindex: bool = True) -> dict:
    """Retrain the item2vec encoder ``alias`` from the interactions, then queue re-embedding of
    the items of every registration using it (directly or through a hybrid) when the model
    changed. Run it on a beat schedule or on demand. Idempotent: the same interactions give the
    same revision and queue nothing."""
    return training.train_and_reindex(alias, reindex=reindex)


@shared_task(
    name=dispatch.FINETUNE,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=3,
    ignore_result=True,
)
def finetune(alias: str = "finetuned", reindex: bool = True, params: dict | None = None) -> dict:
    """Fine-tune the text encoder ``alias`` (:class:`~embrec.encoders.finetune.FinetunedEncoder`)
    on co-consumed items from the interactions, on the worker's GPU when it has one, then queue
    re-embedding of the items of every registration using it when the model changed. ``params``
    override training parameters (``epochs``, ``train_batch_size``, ``max_pairs``,
    ``learning_rate``…). Idempotent: the same interactions and parameters give the same revision
    and queue nothing."""
    return training.finetune_and_reindex(alias, params, reindex=reindex)


@shared_task(
    name=dispatch.EMBEDDING_MAP,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=3,
    ignore_result=True,
)
def embedding_map(label: str, encoder: str, max_points: int = 5000, seed: int = 0) -> dict:
    """Compute the 2-D map of ``label``'s vectors under ``encoder`` and store it in Django's
    cache (:func:`embrec.embedding_map.build`). Returns its size; unknown models compute nothing."""
    try:
        rec = registry.get(label)
    except NotRegistered:
        return {"points": 0}
    result = maps.build(rec, encoder, max_points=int(max_points), seed=int(seed))
    return {"points": result["sampled"], "total": result["total"]}


@shared_task(
    name=dispatch.CLUSTERS,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=3,
    ignore_result=True,
)
def clusters(label: str, encoder: str, params: dict | None = None) -> dict:
    """Cluster ``label``'s vectors under ``encoder`` and cache the result for the admin's clusters
    page (:func:`embrec.clusters.build`). Returns the number of clusters; nothing to cluster (an
    unknown model, no vectors) computes nothing."""
    try:
        result = clustering.build(label, encoder, **(params or {}))
    except AnalysisError as exc:
        logger.warning("embrec: clusters of %s [%s] not computed: %s", label, encoder, exc)
        return {"clusters": 0}
    return {"clusters": len(result.get("clusters", []))}


@shared_task(
    name=dispatch.DUPLICATES,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    max_retries=3,
    ignore_result=True,
)
def duplicates(label: str, encoder: str, params: dict | None = None) -> dict:
    """Find the near-duplicate pairs and isolated items of ``label``'s vectors under ``encoder``
    and cache them for the admin's duplicates page (:func:`embrec.duplicates.build`). Returns the
    number of pairs; nothing to probe (an unknown model, no vectors) computes nothing."""
    try:
        result = near_duplicates.build(label, encoder, **(params or {}))
    except AnalysisError as exc:
        logger.warning("embrec: duplicates of %s [%s] not computed: %s", label, encoder, exc)
        return {"pairs": 0}
    return {"pairs": len(result.get("pairs", []))}
