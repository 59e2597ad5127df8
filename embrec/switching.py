"""The model switch: backfill a pending encoder version, make it live, prune the old one.

1. :func:`start_backfills` queues every object of every registration using an alias whose
   pending version (:func:`embrec.versions.sync_configured`) has not been queued yet. Workers
   then write its vectors beside the live ones; queries keep reading the live version.
2. :func:`backfill_state` tells whether a pending version is complete: every object was queued,
   no outbox row of those models is waiting, none failed since the backfill started.
3. :func:`switch` builds the pending version's HNSW indexes (when the bulk load deferred them),
   rebuilds users' vectors for it, then, in one transaction, retires the live version and makes
   the pending one live. A query looks the live identity up once and reads only rows of it, so
   each answer is entirely the old model's or entirely the new one's.
4. :func:`prune` deletes the vectors, user vectors and indexes of versions retired more than
   ``EMBREC["VERSION_GRACE_PERIOD"]`` seconds ago.

:func:`after_drain` (the drain task, ``embrec_reindex --sync``) and :func:`sweep` (the sweeper)
run the steps that are due; with ``EMBREC["VERSION_AUTO_SWITCH"] = False`` only
``manage.py embrec_switch`` switches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from embrec import indexing, interactions
from embrec.conf import embrec_settings
from embrec.items import Recommendable
from embrec.models import EncoderVersion, OutboxEntry, UserEmbedding, content_type_of
from embrec.registry import registry
from embrec.storage import IndexSpec, build_index, drop_index
from embrec.versions import (
    LIVE,
    PENDING,
    RETIRED,
    grace_period,
    pending_version,
    serving_options,
    sync_all,
)

logger = logging.getLogger("embrec")

#: Rows deleted per statement when a retired version is pruned.
PRUNE_BATCH = 10_000


class SwitchError(Exception):
    """A switch that cannot happen (nothing pending, backfill incomplete); commands show it."""


@dataclass
class BackfillState:
    """Where the backfill of one pending version stands."""

    version: EncoderVersion
    queued: bool
    waiting: int = 0
    failed: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.reasons


def registrations_using(alias: str) -> list[Recommendable]:
    """The registrations that embed their objects with ``alias``."""
    return [rec for rec in registry.all() if alias in rec.get_encoders()]


def _content_type_id(rec: Recommendable) -> int:
    return content_type_of(rec.model).id


def start_backfills(*, kick: bool = True) -> list[EncoderVersion]:
    """Queue every object for each pending version not queued yet; returns those versions.
    With ``kick=False`` no drain task is sent (the caller drains in the foreground).

    The outbox rows name the alias; the write path encodes them for every active version and
    skips the live one where its vector is current (a hash comparison), so the backfill costs
    one encode per object, with the new model.
    """
    started = []
    for version in EncoderVersion.objects.filter(state=PENDING, backfill_queued_at__isnull=True):
        claimed = EncoderVersion.objects.filter(
            pk=version.pk, state=PENDING, backfill_started_at__isnull=True
        ).update(backfill_started_at=timezone.now())
        if not claimed:
            continue  # another process is queueing it
        queued = 0
        for rec in registrations_using(version.alias):
            queued += indexing.reindex(rec, encoder=version.alias, kick=kick)
        EncoderVersion.objects.filter(pk=version.pk).update(backfill_queued_at=timezone.now())
        logger.info(
            "embrec: queued %d object(s) to backfill encoder %r version %s.",
            queued,
            version.alias,
            version.identity,
        )
        version.refresh_from_db()
        started.append(version)
    return started


def backfill_state(version: EncoderVersion) -> BackfillState:
    """Whether ``version``'s backfill is complete, and why not."""
    state = BackfillState(version, queued=version.backfill_queued_at is not None)
    if not state.queued:
        state.reasons.append("its objects are not all queued yet")
    ct_ids = [_content_type_id(rec) for rec in registrations_using(version.alias)]
    outbox = OutboxEntry.objects.filter(content_type_id__in=ct_ids, encoder__in=["", version.alias])
    state.waiting = outbox.filter(state=OutboxEntry.PENDING).count()
    if state.waiting:
        state.reasons.append(f"{state.waiting} outbox row(s) are waiting for a worker")
    if version.backfill_started_at is not None:
        state.failed = outbox.filter(
            state=OutboxEntry.FAILED, created_at__gte=version.backfill_started_at
        ).count()
        if state.failed:
            state.reasons.append(
                f"{state.failed} object(s) failed to embed (embrec_status; retry them or "
                f"switch with --force)"
            )
    return state


def _spec(version: EncoderVersion, ct_id: int) -> IndexSpec:
    options = serving_options(version.alias, version.config)
    return IndexSpec.for_encoder(
        ct_id, version.alias, version.dimensions, options, version.identity
    )


def switch(alias: str, *, force: bool = False, rebuild_users: bool = True) -> EncoderVersion:
    """Make ``alias``'s pending version live; returns it. Raises :class:`SwitchError`.

    Unless ``force``, the backfill must be complete (:func:`backfill_state`). Before the flip,
    the pending version's HNSW indexes are built (exactly its own, not one shared with the live
    version) and every user's vector is rebuilt from the new version's item vectors, so personal
    recommendations read a complete set right after it. The flip itself is one transaction.
    """
    version = pending_version(alias)
    if version is None:
        raise SwitchError(f"Encoder {alias!r} has no pending version to switch to.")
    state = backfill_state(version)
    if not force and not state.complete:
        raise SwitchError(
            f"Encoder {alias!r} version {version.identity} is not backfilled yet: "
            f"{'; '.join(state.reasons)}."
        )
    recs = registrations_using(alias)
    for rec in recs:
        spec = _spec(version, _content_type_id(rec))
        if indexing.has_vectors(spec) and build_index(spec):
            logger.info("embrec: built index %s for the switch of %r.", spec.name, alias)
    if rebuild_users:
        for rec in recs:
            interactions.rebuild_user_vectors(rec.model, encoder=alias, identity=version.identity)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"embrec.version:{alias}"]
            )
        current = EncoderVersion.objects.select_for_update().get(pk=version.pk)
        if current.state != PENDING:
            raise SwitchError(f"Encoder {alias!r} version {version.identity} is no longer pending.")
        now = timezone.now()
        EncoderVersion.objects.filter(alias=alias, state=LIVE).update(state=RETIRED, retired_at=now)
        current.state = LIVE
        current.live_since = now
        current.save(update_fields=["state", "live_since"])
    logger.info("embrec: encoder %r switched to %s.", alias, version.identity)
    return current


def auto_switch() -> list[EncoderVersion]:
    """Switch every pending version whose backfill is complete (``VERSION_AUTO_SWITCH``)."""
    if not embrec_settings.VERSION_AUTO_SWITCH:
        return []
    switched = []
    for version in EncoderVersion.objects.filter(state=PENDING):
        if not backfill_state(version).complete:
            continue
        try:
            switched.append(switch(version.alias))
        except SwitchError as exc:  # another process got there first, or a row arrived
            logger.info("embrec: %s", exc)
    return switched


def prune(*, grace: float | None = None) -> list[EncoderVersion]:
    """Delete retired versions older than ``grace`` seconds (default ``VERSION_GRACE_PERIOD``):
    their vectors (by batches), users' vectors of them and their HNSW indexes. Returns them."""
    cutoff = timezone.now() - timedelta(seconds=grace_period() if grace is None else grace)
    pruned = []
    for version in EncoderVersion.objects.filter(state=RETIRED, retired_at__lte=cutoff):
        ct_ids = _stored_content_types(version)
        with connection.cursor() as cursor:
            while True:
                cursor.execute(
                    "DELETE FROM embrec_embedding WHERE id IN (SELECT id FROM embrec_embedding "
                    "WHERE encoder = %s AND identity = %s LIMIT %s)",
                    [version.alias, version.identity, PRUNE_BATCH],
                )
                if cursor.rowcount < PRUNE_BATCH:
                    break
        UserEmbedding.objects.filter(encoder=version.alias, identity=version.identity).delete()
        for ct_id in ct_ids:
            # Its own index, and one built before versions existed (no identity predicate).
            drop_index(_spec(version, ct_id))
        EncoderVersion.objects.filter(pk=version.pk, state=RETIRED).delete()
        logger.info("embrec: pruned encoder %r version %s.", version.alias, version.identity)
        pruned.append(version)
    return pruned


def _stored_content_types(version: EncoderVersion) -> list[int]:
    ids = {_content_type_id(rec) for rec in registrations_using(version.alias)}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT content_type_id FROM embrec_embedding "
            "WHERE encoder = %s AND identity = %s",
            [version.alias, version.identity],
        )
        ids |= {row[0] for row in cursor.fetchall()}
    return sorted(ids)


def drain_and_switch(**options) -> indexing.DrainResult:
    """Drain the outbox in this process as a worker's drain task does, then start backfills
    and switch complete ones; a backfill started here is drained here too (``options`` go to
    :func:`embrec.indexing.drain`). For ``embrec_drain``, ``embrec.testing.embed_now`` and code
    that embeds without Celery."""
    result = indexing.drain(**options)
    while start_backfills(kick=False):
        result.merge(indexing.drain(**options))
    auto_switch()
    return result


def after_drain() -> list[EncoderVersion]:
    """After a drain: queue new backfills and switch complete ones; returns those switched."""
    start_backfills()
    return auto_switch()


def sweep() -> dict:
    """The sweeper's share: register configured versions, queue backfills, switch complete
    ones, prune expired ones."""
    sync_all(indexing.used_aliases())
    started = start_backfills()
    switched = auto_switch()
    pruned = prune()
    return {"backfills": len(started), "switched": len(switched), "pruned": len(pruned)}
