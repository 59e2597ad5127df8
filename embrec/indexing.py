"""The write path: every change to vectors goes through this module.

Signals, :func:`mark_dirty`, the reindex command, admin actions and Celery tasks are thin adapters
around four functions:

* :func:`enqueue` — write outbox rows for objects (inside the caller's transaction) and, after
  commit, kick one drain task. :func:`kick` deduplicates across processes through the single
  :class:`~embrec.models.DrainSignal` row: while a sent task has not started, no other is sent.
* :func:`drain` — claim outbox rows with ``FOR UPDATE SKIP LOCKED``, encode what changed, write
  vectors in bulk and delete the claimed rows, all in one transaction per batch. Many workers can
  drain at once; none processes a row another is holding, and per-object advisory locks keep two
  workers from writing one object out of order.
* :func:`reindex` — enqueue every indexable object of a model, by keyset pages.
* :func:`sweep` — re-kick rows that have waited too long (the broker was down, a worker died).

Every vector is written for each active version of its encoder alias (:mod:`embrec.versions`):
the live one and, while a new model is backfilled, the pending one.

Bulk loads defer the HNSW index (``EMBREC["INDEX_BUILD_THRESHOLD"]``): the vectors are written
without it and :func:`build_deferred_indexes` builds it in one ``CREATE INDEX`` once the model's
backlog is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    models,
    transaction,
)
from django.db.models.functions import Cast
from django.utils import timezone

from embrec import dispatch
from embrec.conf import embrec_settings
from embrec.encoders import EncoderUnavailable, get_encoder
from embrec.interactions import on_items_embedded
from embrec.items import Recommendable
from embrec.models import DrainSignal, Embedding, EncoderVersion, OutboxEntry, content_type_of
from embrec.paging import keyset_pages
from embrec.registry import registry
from embrec.storage import (
    IndexSpec,
    VectorRow,
    build_index,
    delete_vectors,
    drop_index,
    ensure_index,
    index_exists,
    write_vectors,
)
from embrec.versions import (
    WriteTarget,
    active_versions,
    serving_options,
    sync_all,
    write_targets,
)

logger = logging.getLogger("embrec")


# --------------------------------------------------------------------------- enqueue side


def enqueue(
    model: type[models.Model],
    pks: Iterable,
    *,
    action: str = OutboxEntry.INDEX,
    encoder: str | None = None,
    force: bool = False,
    kick: bool = True,
) -> int:
    """Write one outbox row per pk; kick a drain task after the transaction commits."""
    ct = content_type_of(model)
    rows = [
        OutboxEntry(
            content_type_id=ct.id,
            object_pk=str(pk),
            action=action,
            encoder=encoder or "",
            force=force,
        )
        for pk in pks
    ]
    if not rows:
        return 0
    OutboxEntry.objects.bulk_create(rows, batch_size=5000)
    if kick:
        schedule_kick()
    return len(rows)


def mark_dirty(
    queryset_or_objects: models.QuerySet | Iterable[models.Model],
    *,
    encoder: str | None = None,
    force: bool = False,
    batch_size: int = 5000,
) -> int:
    """Queue objects for re-embedding: for ``QuerySet.update``, ``bulk_create``, raw SQL.

    Accepts a queryset (read by keyset pages, never loaded whole) or an iterable of instances.
    Returns the number of objects queued.
    """
    if isinstance(queryset_or_objects, models.QuerySet):
        model = queryset_or_objects.model
        check_encoder(registry.get(model), encoder)
        total = 0
        for chunk in iter_pk_chunks(queryset_or_objects, batch_size):
            total += enqueue(model, chunk, encoder=encoder, force=force, kick=False)
    else:
        objects = list(queryset_or_objects)
        total = 0
        by_model: dict[type, list] = defaultdict(list)
        for obj in objects:
            by_model[type(obj)].append(obj.pk)
        for model in by_model:
            check_encoder(registry.get(model), encoder)
        for model, pks in by_model.items():
            total += enqueue(model, pks, encoder=encoder, force=force, kick=False)
    if total:
        schedule_kick()
    return total


def check_encoder(recommendable: Recommendable, encoder: str | None) -> None:
    """Raise ``ImproperlyConfigured`` unless ``encoder`` is None or one the model uses."""
    if encoder is not None and encoder not in recommendable.get_encoders():
        raise ImproperlyConfigured(
            f"{recommendable.label} does not use encoder {encoder!r} "
            f"(it uses: {', '.join(recommendable.get_encoders())})."
        )


def iter_pk_chunks(queryset: models.QuerySet, size: int) -> Iterable[list]:
    """Yield lists of pks by keyset pagination (``pk > last``), never by offset."""
    return keyset_pages(queryset, "pk", size)


def reindex(
    recommendable: Recommendable,
    *,
    encoder: str | None = None,
    force: bool = False,
    batch_size: int = 5000,
    progress: Callable[[int], None] | None = None,
    kick: bool = True,
) -> int:
    """Enqueue every object of ``recommendable.get_queryset()`` by keyset pages.

    Unchanged objects cost a hash comparison in the worker, not an encode (unless ``force``).
    Vectors of objects that left the queryset are queued for removal. With ``kick=False`` no
    drain task is sent (the caller drains in the foreground). Returns the number queued.
    """
    check_encoder(recommendable, encoder)
    ct = content_type_of(recommendable.model)
    total = 0
    for chunk in iter_pk_chunks(recommendable.get_queryset(), batch_size):
        with transaction.atomic():
            total += enqueue(recommendable.model, chunk, encoder=encoder, force=force, kick=False)
        if progress:
            progress(len(chunk))
    # Vectors whose object no longer exists (deleted with signals off, or filtered out).
    orphans = list(
        Embedding.objects.filter(content_type=ct)
        .exclude(object_pk__in=_pk_strings(recommendable.get_queryset()))
        .values_list("object_pk", flat=True)
        .distinct()
    )
    if orphans:
        with transaction.atomic():
            enqueue(recommendable.model, orphans, action=OutboxEntry.DELETE, kick=False)
    if kick:
        schedule_kick()
    return total


def _pk_strings(queryset: models.QuerySet) -> models.QuerySet:
    return queryset.annotate(_pk_str=Cast("pk", models.CharField())).values("_pk_str")


def _has_pending_kick(conn) -> bool:
    return any(
        getattr(entry[1], "__name__", "") == "_kick_after_commit" for entry in conn.run_on_commit
    )


def _kick_after_commit() -> None:
    kick()


def schedule_kick() -> None:
    """Kick one drain task after the current transaction commits (once per transaction)."""
    if not embrec_settings.AUTO_KICK:
        return
    if connection.in_atomic_block and _has_pending_kick(connection):
        return
    transaction.on_commit(_kick_after_commit, robust=True)


def _reserve_kick() -> bool:
    """Claim the right to queue a drain task: False while another queued one has not started.

    A reservation older than ``SWEEP_AFTER`` seconds is considered lost (its message vanished)
    and is taken over.
    """
    with connection.cursor() as cursor:
        # A plain read first: while a task is queued (the common case during a burst of saves)
        # no row is written or locked.
        cursor.execute(
            "SELECT 1 FROM embrec_drain_signal WHERE id = 1 AND queued_at IS NOT NULL "
            "AND queued_at >= now() - make_interval(secs => %s)",
            [float(embrec_settings.SWEEP_AFTER)],
        )
        if cursor.fetchone() is not None:
            return False
        cursor.execute(
            """
            INSERT INTO embrec_drain_signal (id, queued_at) VALUES (1, now())
            ON CONFLICT (id) DO UPDATE SET queued_at = now()
             WHERE embrec_drain_signal.queued_at IS NULL
                OR embrec_drain_signal.queued_at < now() - make_interval(secs => %s)
            RETURNING id
            """,
            [float(embrec_settings.SWEEP_AFTER)],
        )
        return cursor.fetchone() is not None


def release_kick() -> None:
    """Mark the queued drain task as started (a worker calls this before draining)."""
    DrainSignal.objects.filter(id=1).update(queued_at=None)


def kick(*, force: bool = False) -> bool:
    """Send a drain task to the encoding queue, unless one is already queued and not started.

    ``force`` sends one regardless (the sweeper, a worker that connects). Never raises for a
    broker outage, and never waits longer than ``EMBREC["KICK_TIMEOUT"]`` for the broker: the rows
    wait in the outbox, and workers kick a drain when they (re)connect to the broker. Returns
    whether a task was sent.
    """
    try:
        if not _reserve_kick() and not force:
            return False
    except DatabaseError as exc:
        # Called after commit: the save itself already succeeded; the sweeper catches up.
        logger.warning("embrec: could not reserve a drain task (%s).", exc)
        return False
    # Bounded by EMBREC["KICK_TIMEOUT"]: with the broker down a save costs that much at most.
    sent = dispatch.send(
        dispatch.DRAIN,
        what="a drain task",
        meanwhile="workers drain the outbox when they reconnect, the sweeper otherwise",
    )
    if not sent:
        # No task is queued: the next save (or a worker reconnecting) must be free to kick.
        with contextlib.suppress(DatabaseError):
            release_kick()
    return sent


# --------------------------------------------------------------------------- drain side


@dataclass
class DrainResult:
    """What one call to :func:`drain` did."""

    batches: int = 0
    claimed: int = 0
    encoded: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    #: Indexes this drain left unbuilt while writing (bulk load), and those it built afterwards.
    deferred: set[IndexSpec] = field(default_factory=set)
    indexes_built: list[str] = field(default_factory=list)

    def merge(self, other: DrainResult) -> None:
        self.batches += other.batches
        self.claimed += other.claimed
        self.encoded += other.encoded
        self.unchanged += other.unchanged
        self.deleted += other.deleted
        self.failed += other.failed
        self.errors.extend(other.errors)
        self.deferred |= other.deferred
        self.indexes_built.extend(other.indexes_built)

    def build_ready_indexes(self) -> None:
        """Build the deferred indexes whose model has nothing pending any more."""
        built = build_deferred_indexes(self.deferred)
        self.indexes_built.extend(built)
        self.deferred = {spec for spec in self.deferred if spec.name not in built}


def used_aliases() -> set[str]:
    """Every encoder alias a registration uses."""
    return {alias for rec in registry.all() for alias in rec.get_encoders()}


def drain(
    *,
    batch_size: int | None = None,
    max_batches: int | None = None,
    max_seconds: float | None = None,
    on_batch: Callable[[DrainResult], None] | None = None,
) -> DrainResult:
    """Process pending outbox rows until none are left (or a limit is reached).

    Each batch is one transaction (see :func:`drain_batch`). ``on_batch`` is called after each
    committed batch (progress bars, fan-out to more workers). After a batch that deferred an
    index, the index is built (outside the batch transaction) once no row of that model is
    pending any more: the worker that commits the last batch builds it.
    """
    batch_size = int(batch_size or embrec_settings.BATCH_SIZE)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    # A changed encoder configuration registers its identity as a pending version here, before
    # anything is written with it (its backfill is queued by embrec.switching).
    sync_all(used_aliases())
    total = DrainResult()
    started = time.monotonic()
    while max_batches is None or total.batches < max_batches:
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            break
        result = drain_batch(batch_size, targets=all_write_targets())
        if result is None:
            break
        total.merge(result)
        if on_batch is not None:
            on_batch(result)
        if result.deferred:
            total.build_ready_indexes()
    if total.deferred:
        # Stopped by a limit, or the last rows were held by other workers: build what is ready.
        total.build_ready_indexes()
    total.seconds = time.monotonic() - started
    return total


def all_write_targets() -> dict[str, list[WriteTarget]]:
    """:func:`~embrec.versions.write_targets` of every alias a registration uses (read before
    a batch's transaction, so the claim transaction runs no extra statement)."""
    targets = {}
    for alias in sorted(used_aliases()):
        try:
            targets[alias] = write_targets(alias)
        except ImproperlyConfigured:
            continue  # raised by the batch that needs it, as a batch error
    return targets


def drain_batch(
    batch_size: int, *, targets: dict[str, list[WriteTarget]] | None = None
) -> DrainResult | None:
    """Claim and process one batch in one transaction; ``None`` when nothing is pending.

    1. Claim up to ``batch_size`` pending rows with ``FOR UPDATE SKIP LOCKED`` (workers never
       wait for each other's rows), plus any other pending rows of the same objects (an object
       saved ten times is encoded once).
    2. Take a transaction-scoped advisory lock per object, in a fixed order: two workers holding
       different rows of the same object are serialised, so the later one reads the newer text
       and an older vector can never overwrite a newer one.
    3. Create missing HNSW indexes, load the objects, encode changed texts, upsert the vectors in
       bulk, delete vectors of objects that are gone or filtered out.
    4. Delete the claimed rows (and older failure records of those objects) and mark the rows of
       poison objects failed, in the same transaction as the vector writes.

    A crash anywhere rolls the whole batch back; the rows become claimable again. A crash that is
    not a database error (say, the encoder fails on every text) counts an attempt on the claimed
    rows; after ``EMBREC["MAX_ATTEMPTS"]`` they are marked failed instead of retried forever.
    """
    claimed_ids: list[int] = []
    try:
        return _drain_batch(batch_size, claimed_ids, targets)
    except (OperationalError, InterfaceError, EncoderUnavailable):
        # Transient (the database or an encoder's remote service is gone): the rows stay pending
        # without counting an attempt, and the task retries with backoff.
        raise
    except Exception as exc:
        if claimed_ids:
            record_attempt(claimed_ids, _describe(exc))
        raise


def _drain_batch(
    batch_size: int, claimed_ids: list[int], targets: dict[str, list[WriteTarget]] | None
) -> DrainResult | None:
    with transaction.atomic():
        entries = list(
            OutboxEntry.objects.select_for_update(skip_locked=True)
            .filter(state=OutboxEntry.PENDING)
            .order_by("id")[:batch_size]
        )
        if not entries:
            return None
        result = DrainResult(batches=1, claimed=len(entries))
        by_ct: dict[int, list[OutboxEntry]] = defaultdict(list)
        for entry in entries:
            by_ct[entry.content_type_id].append(entry)
        claimed_ids.extend(e.id for e in entries)
        for ct_id, group in by_ct.items():
            extra = list(
                OutboxEntry.objects.select_for_update(skip_locked=True)
                .filter(
                    state=OutboxEntry.PENDING,
                    content_type_id=ct_id,
                    object_pk__in={e.object_pk for e in group},
                )
                .exclude(id__in=claimed_ids)
            )
            group.extend(extra)
            claimed_ids.extend(e.id for e in extra)
            result.claimed += len(extra)
        _lock_objects(by_ct)

        plans = [_plan_group(ct_id, group, targets) for ct_id, group in by_ct.items()]
        # Indexes first: CREATE INDEX locks the table against writers, which must not be us.
        # A bulk load defers them instead (built after the backlog, see build_deferred_indexes).
        for plan in plans:
            for alias_targets in plan.targets.values():
                for target in alias_targets:
                    spec = target.index_spec(plan.ct_id)
                    if _defer_index(spec):
                        result.deferred.add(spec)
                    else:
                        ensure_index(spec)
        done_ids: list[int] = []
        failed: dict[int, str] = {}
        for plan in plans:
            _process_group(plan, result, done_ids, failed)
        if done_ids:
            OutboxEntry.objects.filter(id__in=done_ids).delete()
            _forget_failures(by_ct, failed)
        if failed:
            _mark_failed(failed)
        result.failed = len(failed)
    return result


def _pending_for(content_type_id: int, limit: int | None = None) -> int:
    """Pending outbox rows of one model (counting stops at ``limit``)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM embrec_outbox WHERE state = %s "
            "AND content_type_id = %s LIMIT %s) AS pending",
            [OutboxEntry.PENDING, content_type_id, limit],
        )
        return int(cursor.fetchone()[0])


def has_vectors(spec: IndexSpec) -> bool:
    """Whether any vector matches ``spec``'s predicate."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM embrec_embedding WHERE {spec.predicate_sql()})"
        )
        return bool(cursor.fetchone()[0])


def _defer_index(spec: IndexSpec) -> bool:
    """Whether this batch writes ``spec``'s vectors without creating its missing index.

    Deferred when the index does not exist and either a bulk load is pending (at least
    ``INDEX_BUILD_THRESHOLD`` rows of the model) or vectors are already stored without it (a
    deferred load under way, or an index dropped for a rebuild): creating it here would build the
    whole graph inside the batch transaction while other workers wait.
    """
    threshold = int(embrec_settings.INDEX_BUILD_THRESHOLD or 0)
    if threshold <= 0 or index_exists(spec):
        return False
    return _pending_for(spec.content_type_id, threshold) >= threshold or has_vectors(spec)


def build_deferred_indexes(specs: Iterable[IndexSpec]) -> list[str]:
    """Build the missing indexes of ``specs`` whose model has no pending outbox row left.

    Runs outside any batch transaction; :func:`~embrec.storage.build_index` serialises builders.
    Returns the names of the indexes this call built.
    """
    built = []
    for spec in sorted(specs, key=lambda s: s.name):
        if _pending_for(spec.content_type_id, 1) or index_exists(spec):
            continue
        started = time.monotonic()
        if build_index(spec):
            logger.info("embrec: built index %s in %.1f s.", spec.name, time.monotonic() - started)
            built.append(spec.name)
    return built


def index_specs(recommendable: Recommendable, encoder: str | None = None) -> list[IndexSpec]:
    """The HNSW index specs of a registered model (all its encoders, or one; every active
    version of each); loads encoders."""
    ct = content_type_of(recommendable.model)
    aliases = [encoder] if encoder else recommendable.get_encoders()
    return [target.index_spec(ct.id) for alias in aliases for target in write_targets(alias)]


def drop_indexes(recommendable: Recommendable, encoder: str | None = None) -> list[str]:
    """Drop a model's HNSW indexes before a full re-embed; returns the names that existed.

    The drains that follow write without index maintenance (vectors without an index are
    already stored, so they defer it) and the index is built once the backlog is gone.
    """
    return [spec.name for spec in index_specs(recommendable, encoder) if drop_index(spec)]


def build_missing_indexes() -> list[str]:
    """Safety net (the sweeper, ``embrec_reindex --sync``): build indexes left missing.

    For every registered (model, encoder, active version) with stored vectors, no pending
    outbox row and no index, the index is built. Dimensions are read from the versions (or,
    before any version is registered, from the stored vectors), so no encoder is loaded.
    Returns the names of the indexes built.
    """
    specs = set()
    for rec in registry.all():
        ct = content_type_of(rec.model)
        for alias in rec.get_encoders():
            versions = active_versions(alias)
            if versions:
                for version in versions:
                    options = serving_options(alias, version.config)
                    spec = IndexSpec.for_encoder(
                        ct.id, alias, version.dimensions, options, version.identity
                    )
                    if has_vectors(spec):
                        specs.add(spec)
                continue
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT dimensions FROM embrec_embedding WHERE content_type_id = %s "
                    "AND encoder = %s LIMIT 1",
                    [ct.id, alias],
                )
                row = cursor.fetchone()
            if row is None:
                continue
            options = (embrec_settings.ENCODERS.get(alias) or {}).get("OPTIONS") or {}
            specs.add(IndexSpec.for_encoder(ct.id, alias, int(row[0]), options))
    return build_deferred_indexes(specs)


def _object_key(object_pk: str) -> int:
    digest = hashlib.blake2b(object_pk.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_objects(by_ct: dict[int, list[OutboxEntry]]) -> None:
    keys = sorted({(ct_id, _object_key(e.object_pk)) for ct_id, g in by_ct.items() for e in g})
    with connection.cursor() as cursor:
        # unnest() yields in array order, so every worker locks in the same (sorted) order.
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(c, k)) FROM unnest(%s::int[], %s::int[]) AS t(c, k)",
            [[c for c, _ in keys], [k for _, k in keys]],
        )


def _forget_failures(by_ct: dict[int, list[OutboxEntry]], failed: dict[int, str]) -> None:
    """Older failure records of objects that were just processed successfully are obsolete."""
    for ct_id, group in by_ct.items():
        ok = {e.object_pk for e in group if e.id not in failed}
        if ok:
            OutboxEntry.objects.filter(
                state=OutboxEntry.FAILED, content_type_id=ct_id, object_pk__in=ok
            ).delete()


def _mark_failed(failed: dict[int, str]) -> None:
    """Mark rows failed, keeping one failure record per object (the newest error)."""
    rows = OutboxEntry.objects.filter(id__in=list(failed)).only(
        "id", "content_type_id", "object_pk"
    )
    for entry in rows:
        OutboxEntry.objects.filter(
            state=OutboxEntry.FAILED,
            content_type_id=entry.content_type_id,
            object_pk=entry.object_pk,
        ).exclude(id=entry.id).delete()
    by_error: dict[str, list[int]] = defaultdict(list)
    for entry_id, error in failed.items():
        by_error[error[:4000]].append(entry_id)
    for error, ids in by_error.items():
        OutboxEntry.objects.filter(id__in=ids).update(
            state=OutboxEntry.FAILED,
            last_error=error,
            attempts=models.F("attempts") + 1,
        )


def record_attempt(entry_ids: Sequence[int], error: str) -> int:
    """Count a failed attempt on rows whose batch crashed; fail them after ``MAX_ATTEMPTS``."""
    with transaction.atomic():
        OutboxEntry.objects.filter(id__in=list(entry_ids), state=OutboxEntry.PENDING).update(
            attempts=models.F("attempts") + 1, last_error=error[:4000]
        )
        return OutboxEntry.objects.filter(
            id__in=list(entry_ids),
            state=OutboxEntry.PENDING,
            attempts__gte=int(embrec_settings.MAX_ATTEMPTS),
        ).update(state=OutboxEntry.FAILED)


@dataclass
class _GroupPlan:
    ct_id: int
    entries: list[OutboxEntry]
    rec: Recommendable | None
    aliases: list[str]
    #: alias -> the versions to write (live first, then pending).
    targets: dict[str, list[WriteTarget]] = field(default_factory=dict)


def _plan_group(
    ct_id: int, entries: list[OutboxEntry], targets: dict[str, list[WriteTarget]] | None = None
) -> _GroupPlan:
    ct = ContentType.objects.get_for_id(ct_id)
    model = ct.model_class()
    if model is None or not registry.is_registered(model):
        return _GroupPlan(ct_id, entries, None, [])
    rec = registry.get(model)
    aliases = rec.get_encoders()
    targets = targets or {}
    return _GroupPlan(
        ct_id,
        entries,
        rec,
        aliases,
        {a: targets[a] if a in targets else write_targets(a) for a in aliases},
    )


def _process_group(
    plan: _GroupPlan,
    result: DrainResult,
    done_ids: list[int],
    failed: dict[int, str],
) -> None:
    ct_id, entries, rec = plan.ct_id, plan.entries, plan.rec
    if rec is None:
        # The model was unregistered or removed: its vectors are no longer wanted.
        pks = sorted({e.object_pk for e in entries})
        result.deleted += delete_vectors(ct_id, pks)
        done_ids.extend(e.id for e in entries)
        return
    entries_by_pk: dict[str, list[OutboxEntry]] = defaultdict(list)
    for entry in entries:
        entries_by_pk[entry.object_pk].append(entry)

    # The database is the truth: objects that exist and pass should_index() get vectors, all
    # others lose theirs, whatever the row's action says. That makes replays idempotent.
    pk_values = {}
    bad_pks = []
    for pk in entries_by_pk:
        try:
            pk_values[pk] = rec.pk_from_string(pk)
        except (ValidationError, ValueError, TypeError):
            bad_pks.append(pk)
    for pk in bad_pks:
        result.deleted += delete_vectors(ct_id, [pk])
        done_ids.extend(e.id for e in entries_by_pk.pop(pk))
    objects = {
        str(obj.pk): obj for obj in rec.get_queryset().filter(pk__in=list(pk_values.values()))
    }
    gone = []
    texts: dict[str, str] = {}
    for pk, group in entries_by_pk.items():
        obj = objects.get(pk)
        try:
            if obj is None or not rec.should_index(obj):
                gone.append(pk)
                continue
            text = rec.get_text(obj)
            if not isinstance(text, str):
                raise TypeError(f"get_text() returned {type(text).__name__}, expected str")
            texts[pk] = text
        except Exception as exc:  # a bad object must not sink the batch; recorded on its row
            for entry in group:
                failed[entry.id] = _describe(exc)
    if gone:
        result.deleted += delete_vectors(ct_id, gone)

    for alias in plan.aliases:
        wanted = {
            pk: text
            for pk, text in texts.items()
            if any(not e.encoder or e.encoder == alias for e in entries_by_pk[pk])
        }
        forced = {
            pk
            for pk in wanted
            if any(e.force and (not e.encoder or e.encoder == alias) for e in entries_by_pk[pk])
        }
        for target in plan.targets.get(alias, []):
            _encode_and_write(
                ct_id, target, rec, wanted, forced, entries_by_pk, result, failed, objects=objects
            )

    for group in entries_by_pk.values():
        for entry in group:
            if entry.id not in failed:
                done_ids.append(entry.id)


def _encode_and_write(
    ct_id: int,
    target: WriteTarget,
    rec: Recommendable,
    texts: dict[str, str],
    forced: set[str],
    entries_by_pk: dict[str, list[OutboxEntry]],
    result: DrainResult,
    failed: dict[int, str],
    objects: dict | None = None,
) -> None:
    if not texts:
        return
    encoder, identity, alias = target.encoder, target.identity, target.encoder.alias
    existing = dict(
        Embedding.objects.filter(
            content_type_id=ct_id,
            encoder=alias,
            object_pk__in=list(texts),
            identity=identity,
        ).values_list("object_pk", "content_hash")
    )
    todo = []
    for pk, text in texts.items():
        obj = objects.get(pk) if objects is not None else None
        digest = rec.content_hash(text if obj is None else encoder.content_key(rec, obj, text))
        if pk not in forced and existing.get(pk) == digest:
            result.unchanged += 1
            continue
        todo.append((pk, text, digest))
    if not todo:
        return
    vectors, errors = encode_isolating_failures(
        encoder,
        [t for _, t, _ in todo],
        rec=rec,
        objects=[objects.get(pk) for pk, _, _ in todo] if objects is not None else None,
    )
    rows = []
    no_vector = []
    for i, ((pk, _text, digest), vector) in enumerate(zip(todo, vectors, strict=True)):
        if vector is not None and not np.isfinite(vector).all():
            # pgvector rejects NaN/inf, which would fail the write of the whole batch.
            vector, errors[i] = None, "ValueError: the encoder returned NaN or infinite values"
        if vector is None:
            if i not in errors:
                # encode_objects() has no vector for this object (e.g. a behavioural encoder
                # and an item without interactions): no row for this encoder, not a failure.
                no_vector.append(pk)
                continue
            for entry in entries_by_pk[pk]:
                failed[entry.id] = f"[{alias}] {errors[i]}"
            continue
        rows.append(VectorRow(pk, vector, digest))
    if no_vector:
        delete_vectors(ct_id, no_vector, alias, identity=identity)
    if rows:
        result.encoded += write_vectors(ct_id, alias, identity, rows)
        if not target.live:
            # A pending version's user vectors are built when it goes live (embrec.switching).
            return
        # Read path hook: user vectors built from these items are now stale. Marked after commit:
        # the marking can wait on row locks held by a running user-vector refresh, and the new
        # item vectors (what an edit in the admin waits for) must not wait with it.
        pks = [row.object_pk for row in rows]
        transaction.on_commit(lambda: on_items_embedded(ct_id, alias, pks), robust=True)


def encode_isolating_failures(encoder, texts: Sequence[str], *, rec=None, objects=None):
    """Encode ``texts``; if the encoder raises, bisect to find the items that break it.

    Returns ``(vectors, errors)``: ``vectors[i]`` is ``None`` for a failed text and ``errors[i]``
    holds its error message; ``vectors[i]`` is ``None`` without an error when the encoder's
    :meth:`~embrec.encoders.base.BaseEncoder.encode_objects` (called when ``rec`` and ``objects``
    are given) has no vector for that object. Transient errors (database, out of memory after the
    encoder's own backoff) still propagate when a single item cannot be told apart from the rest.
    """
    vectors: list = [None] * len(texts)
    errors: dict[int, str] = {}

    def run(lo: int, hi: int) -> None:
        try:
            if rec is not None and objects is not None:
                out = encoder.encode_objects(rec, list(objects[lo:hi]), list(texts[lo:hi]))
            else:
                out = encoder.encode(list(texts[lo:hi]))
        except EncoderUnavailable:
            raise  # no item is to blame: bisecting would only call a failing service again
        except Exception as exc:
            if hi - lo == 1:
                errors[lo] = _describe(exc)
                return
            mid = (lo + hi) // 2
            run(lo, mid)
            run(mid, hi)
            return
        for offset, vector in enumerate(out):
            vectors[lo + offset] = vector

    run(0, len(texts))
    if errors and len(errors) == len(texts) and len(texts) > 1:
        # Everything failed: more likely the encoder is broken than every item being poison.
        first = next(iter(errors.values()))
        raise RuntimeError(f"Encoder {encoder.alias!r} failed on every item: {first}")
    return vectors, errors


def _describe(exc: BaseException) -> str:
    tail = traceback.format_exception_only(type(exc), exc)
    return "".join(tail).strip()


# --------------------------------------------------------------------------- sweep


def sweep(*, older_than: float | None = None) -> int:
    """Re-kick pending rows older than ``older_than`` seconds; returns how many were waiting."""
    age = embrec_settings.SWEEP_AFTER if older_than is None else older_than
    cutoff = timezone.now() - timedelta(seconds=age)
    stale = OutboxEntry.objects.filter(state=OutboxEntry.PENDING, created_at__lt=cutoff)
    # Read-only on purpose: updating the rows would wait on the ones workers hold right now.
    count = stale.count()
    if count:
        kick(force=True)
    # An index left missing (a deferred build that never ran: the worker died) is built here.
    build_missing_indexes()
    return count


def retry_failed(content_type_id: int | None = None) -> int:
    """Put failed outbox rows back to pending."""
    qs = OutboxEntry.objects.filter(state=OutboxEntry.FAILED)
    if content_type_id is not None:
        qs = qs.filter(content_type_id=content_type_id)
    count = qs.update(state=OutboxEntry.PENDING, last_error="", attempts=0)
    if count:
        schedule_kick()
    return count


# --------------------------------------------------------------------------- reporting


def pending_count() -> int:
    """Outbox rows waiting for a worker."""
    return OutboxEntry.objects.filter(state=OutboxEntry.PENDING).count()


def status(recommendable: Recommendable, alias: str, *, identity: bool = True) -> dict:
    """Counts for one (model, encoder): objects, embedded, stale, pending, failed, versions.

    ``embedded`` counts vectors of the live version (all vectors before any version is
    registered), the ones queries read. ``stale`` counts vectors (other than those of a pending
    or retired version) written under another identity than the configured one; computing it asks the encoder for its identity, which the packaged encoders read from
    their configuration and model files without loading the model or importing torch
    (``identity=False`` skips it and reports ``None``). ``live`` and ``next`` name the live and
    pending identities; ``next_embedded`` counts the pending version's vectors and
    ``progress`` (0-100) compares them with the live version's (or, with none, the objects).
    """
    ct = content_type_of(recommendable.model)
    vectors = Embedding.objects.filter(content_type=ct, encoder=alias)
    live, pending = None, None
    for version in active_versions(alias):
        if version.state == version.LIVE:
            live = version
        else:
            pending = version
    live_vectors = vectors.filter(identity=live.identity) if live is not None else vectors
    outbox = OutboxEntry.objects.filter(content_type=ct, encoder__in=["", alias])
    stale = None
    if identity:
        current = get_encoder(alias).identity.as_string()
        # A pending or retired version's vectors are kept on purpose: not stale.
        kept = EncoderVersion.objects.filter(alias=alias).exclude(state=EncoderVersion.LIVE)
        others = vectors.exclude(identity__in=kept.values("identity"))
        stale = others.exclude(identity=current).count()
    objects = recommendable.get_queryset().count()
    embedded = live_vectors.count()
    next_embedded = progress = None
    if pending is not None:
        next_embedded = vectors.filter(identity=pending.identity).count()
        base = embedded or objects
        progress = round(min(100.0, 100.0 * next_embedded / base), 1) if base else 100.0
    return {
        "model": recommendable.label,
        "encoder": alias,
        "objects": objects,
        "embedded": embedded,
        "stale": stale,
        "pending": outbox.filter(state=OutboxEntry.PENDING).values("object_pk").distinct().count(),
        "failed": outbox.filter(state=OutboxEntry.FAILED).values("object_pk").distinct().count(),
        "live": live.identity if live is not None else None,
        "next": pending.identity if pending is not None else None,
        "next_embedded": next_embedded,
        "progress": progress,
    }


def status_rows(recommendables: Iterable[Recommendable]) -> list[tuple[dict, str]]:
    """:func:`status` for every encoder of each registration, as ``(row, error)`` pairs.

    An encoder whose identity cannot be read (``ImproperlyConfigured``) gets ``stale=None`` and
    the error message; ``error`` is ``""`` otherwise. Shared by ``embrec_status`` and the admin
    dashboard.
    """
    rows = []
    for rec in recommendables:
        for alias in rec.get_encoders():
            try:
                rows.append((status(rec, alias), ""))
            except (ImproperlyConfigured, EncoderUnavailable) as exc:
                rows.append((status(rec, alias, identity=False), str(exc)))
    return rows
