"""Interactions and user vectors.

:func:`record_interaction` stores one event (``view``, ``like``, ``purchase``, ``dislike``… with
weights from ``EMBREC["INTERACTION_WEIGHTS"]``), marks the user's vectors stale and, after the
transaction commits, queues a Celery task that recomputes them: the request never waits for it.

A user's vector (one :class:`~embrec.models.UserEmbedding` per registered model and encoder) is the
weighted, time-decayed mean of the vectors of the items the user interacted with::

    u = Σ wᵢ · 0.5^(ageᵢ / half_life) · vᵢ  /  Σ |wᵢ · 0.5^(ageᵢ / half_life)|

built from the user's ``USER_VECTOR_MAX_INTERACTIONS`` most recently touched *distinct* items
(every event on those items counts). Several events on one item add up; negative kinds
(dislikes) subtract, pushing the vector away from those items. With
``USER_VECTOR_WEIGHTING = "uniform"`` every positive event weighs 1 whatever its kind and negative
events leave the vector alone (they still hide the item from the user's results).

``ageᵢ`` is measured from the user's *latest* interaction, not from now: the vector is a
normalised mean, so scaling every weight by the same factor (which is all that measuring from
now would add) changes nothing, while measuring from now would underflow every weight of a user
who has been away for years (or of imported historical data) to zero. A user with no positive
contribution has no vector (popularity fallback). Encoders with a user model of their own (``folds_in_users``, e.g. ALS) build the vector from the
same weights with :meth:`~embrec.encoders.BaseEncoder.fold_in_user` instead of the mean, over all
of the user's items when ``profile_uses_all_items``.
When items are re-embedded the write path calls :func:`on_items_embedded`, which marks
dependent user vectors stale and queues their refresh. A user vector is built from item vectors
of one encoder identity (:mod:`embrec.versions`) and stored under it: while a new model is
backfilled, users have a vector per version and reads use the live one's. Stale or missing vectors are computed on
the fly by the read path, so results never use a vector known to be outdated.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.db.models import Max
from django.db.models.functions import Collate
from django.utils import timezone

from embrec import dispatch
from embrec.conf import embrec_settings
from embrec.encoders import get_encoder
from embrec.exceptions import InteractionError
from embrec.items import Recommendable
from embrec.models import Embedding, Interaction, UserEmbedding, content_type_of
from embrec.paging import keyset_pages
from embrec.registry import registry
from embrec.scoring import half_life_decay
from embrec.storage import parse_vector
from embrec.vectors import unit_vector
from embrec.versions import encoder_of, live_identity, user_identities

logger = logging.getLogger("embrec")


def interaction_weight(kind: str) -> float:
    """The configured weight of an interaction kind; :class:`InteractionError` if unknown."""
    weights = embrec_settings.INTERACTION_WEIGHTS
    if kind not in weights:
        known = ", ".join(sorted(weights)) or "none"
        raise InteractionError(
            f"Unknown interaction kind {kind!r} (configured kinds: {known}).",
            code="unknown_kind",
            field="kind",
        )
    return float(weights[kind])


@dataclass
class Event:
    """One event to record with :func:`record_interactions`."""

    obj: models.Model
    kind: str
    weight: float | None = None
    at: datetime | None = None


def record_interaction(
    user,
    obj: models.Model,
    kind: str,
    weight: float | None = None,
    at: datetime | None = None,
) -> Interaction:
    """Record that ``user`` did ``kind`` on ``obj`` (a registered model instance).

    ``weight`` defaults to ``EMBREC["INTERACTION_WEIGHTS"][kind]``; ``at`` (default: now) may
    back-date imported events. The user's vector is refreshed by a task after commit.
    """
    return record_interactions(user, [Event(obj, kind, weight, at)])[0]


def record_interactions(user, events: Iterable[Event]) -> list[Interaction]:
    """Record several events of one user in one transaction; one refresh task per model."""
    if user is None or not getattr(user, "is_authenticated", False) or user.pk is None:
        raise InteractionError("Interactions need a saved, authenticated user.", field="user")
    now = timezone.now()
    rows: list[Interaction] = []
    for event in events:
        rec = registry.get(event.obj)  # NotRegistered for other models
        if event.obj.pk is None:
            raise InteractionError("Cannot record an interaction on an unsaved object.")
        weight = interaction_weight(event.kind) if event.weight is None else event.weight
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise InteractionError(f"weight must be a number, got {weight!r}.") from None
        if not np.isfinite(weight):
            raise InteractionError("weight must be finite.", field="weight")
        at = event.at or now
        if timezone.is_naive(at):
            at = timezone.make_aware(at)
        ct = content_type_of(rec.model)
        rows.append(
            Interaction(
                user_id=user.pk,
                content_type_id=ct.id,
                object_pk=str(event.obj.pk),
                kind=event.kind,
                weight=weight,
                created_at=at,
            )
        )
    if not rows:
        return []
    ct_ids = sorted({row.content_type_id for row in rows})
    with transaction.atomic():
        Interaction.objects.bulk_create(rows)
        UserEmbedding.objects.filter(user_id=user.pk, content_type_id__in=ct_ids).update(
            is_stale=True
        )
        for ct_id in ct_ids:
            _after_commit(_queue_user_refresh, user.pk, ct_id)
    return rows


def _after_commit(func, *args) -> None:
    transaction.on_commit(lambda: func(*args), robust=True)


def _queue_user_refresh(user_id: Any, content_type_id: int) -> None:
    # Bounded by EMBREC["KICK_TIMEOUT"]: a down broker must not hold the request. With the broker
    # down the vector stays stale and reads compute it.
    dispatch.send(
        dispatch.REFRESH_USER_VECTORS,
        [user_id, content_type_id],
        what="a user-vector refresh",
    )


def _queue_items_refresh(content_type_id: int, encoder: str, object_pks: list[str]) -> None:
    dispatch.send(
        dispatch.REFRESH_USER_VECTORS_FOR_ITEMS,
        [content_type_id, encoder, object_pks],
        what="user-vector refreshes",
    )


# --------------------------------------------------------------------------- user vectors


@dataclass
class UserProfile:
    """What a user's vector is made of: effective weight, vector and main kind per item."""

    encoder: str
    vector: np.ndarray | None
    identity: str = ""
    weights: dict[str, float] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    interaction_count: int = 0


def _decay(at: datetime, reference: datetime) -> float:
    """``0.5 ** (age / USER_VECTOR_HALF_LIFE_DAYS)``, age in days before ``reference``."""
    age_days = max((reference - at).total_seconds(), 0.0) / 86400.0
    return half_life_decay(age_days, embrec_settings.USER_VECTOR_HALF_LIFE_DAYS)


def profile_weight(weight: float, mode: str) -> float:
    """An event's weight in a user vector: its own (``"weighted"``), or 1 for positive events
    and 0 for negative ones (``"uniform"``). Negative events hide the item either way."""
    if mode == "uniform":
        return 1.0 if weight > 0 else 0.0
    return float(weight)


def recent_items_query(user_id: Any, content_type_id: int, limit: int) -> models.QuerySet:
    """The keys of the ``limit`` distinct items the user touched most recently, as a query
    (latest event first; items whose latest events are simultaneous are ordered by key, as
    strings, descending)."""
    return (
        Interaction.objects.filter(user_id=user_id, content_type_id=content_type_id)
        .values("object_pk")
        .annotate(latest=Max("created_at"))
        .order_by("-latest", Collate("object_pk", "C").desc())
        .values_list("object_pk", flat=True)[: int(limit)]
    )


def recent_items(user_id: Any, content_type_id: int, limit: int) -> list[str]:
    """The ``limit`` distinct items the user touched most recently (see
    :func:`recent_items_query`)."""
    return list(recent_items_query(user_id, content_type_id, limit))


def interaction_weights(
    user_id: Any,
    content_type_id: int,
    *,
    now: datetime | None = None,
    all_items: bool = False,
) -> tuple[dict[str, float], dict[str, str], int]:
    """Effective (summed, time-decayed) weight and strongest kind per item, over the user's
    ``USER_VECTOR_MAX_INTERACTIONS`` most recently touched distinct items; plus the number of
    events read.

    Weights decay with ``USER_VECTOR_HALF_LIFE_DAYS`` before ``now`` (default: the user's latest
    interaction, see the module docstring) and follow ``USER_VECTOR_WEIGHTING``. ``all_items``:
    every item of the user counts (encoders that fold users in, such as ALS).
    """
    mode = embrec_settings.USER_VECTOR_WEIGHTING
    events_qs = Interaction.objects.filter(user_id=user_id, content_type_id=content_type_id)
    if not all_items:
        # One statement: the recent items are a subquery of the events' query.
        limit = embrec_settings.USER_VECTOR_MAX_INTERACTIONS
        events_qs = events_qs.filter(
            object_pk__in=recent_items_query(user_id, content_type_id, limit)
        )
    events = list(events_qs.values_list("object_pk", "kind", "weight", "created_at"))
    if not events:
        return {}, {}, 0
    reference = now or max(at for _, _, _, at in events)
    weights: dict[str, float] = defaultdict(float)
    strongest: dict[str, tuple[float, str]] = {}
    for pk, kind, weight, at in events:
        weights[pk] += profile_weight(weight, mode) * _decay(at, reference)
        if pk not in strongest or abs(weight) > strongest[pk][0]:
            strongest[pk] = (abs(weight), kind)
    return dict(weights), {pk: kind for pk, (_, kind) in strongest.items()}, len(events)


def user_profile(
    user_id: Any,
    rec: Recommendable,
    encoder: str,
    *,
    now: datetime | None = None,
    identity: str | None = None,
) -> UserProfile:
    """Compute a user's vector from their ``USER_VECTOR_MAX_INTERACTIONS`` most recently touched
    items (see :func:`interaction_weights`).

    Only item vectors of one encoder identity are used: ``identity``, by default the live
    version's (:func:`embrec.versions.live_identity`); before any version is registered, the
    newest stored one. Items without a vector of that identity (not embedded yet) are skipped.
    """
    ct = content_type_of(rec.model)
    if identity is None:
        identity = live_identity(encoder)
    model = get_encoder(encoder)
    if identity is not None and model.identity.as_string() != identity:
        model = encoder_of(encoder, identity) or model
    weights, kinds, count = interaction_weights(
        user_id, ct.id, now=now, all_items=model.profile_uses_all_items
    )
    profile = UserProfile(encoder=encoder, vector=None, interaction_count=count)
    if not weights:
        return profile
    rows_qs = Embedding.objects.filter(
        content_type_id=ct.id, encoder=encoder, object_pk__in=list(weights)
    )
    if identity is not None:
        rows_qs = rows_qs.filter(identity=identity)
    rows = list(rows_qs.order_by("-updated_at").values_list("object_pk", "vector", "identity"))
    if not rows:
        return profile
    identity = rows[0][2]
    vectors = {pk: parse_vector(v) for pk, v, ident in rows if ident == identity}
    profile.identity = identity
    profile.vectors = vectors
    profile.weights = {pk: w for pk, w in weights.items() if pk in vectors}
    profile.kinds = {pk: kinds[pk] for pk in profile.weights}
    if not any(w > 0 for w in profile.weights.values()):
        return profile  # only dislikes: nothing to recommend from, popularity fallback
    if model.folds_in_users:
        # The encoder's own user model (ALS: the least-squares fold-in), from the same items;
        # only when this process holds the model of that identity.
        if model.identity.as_string() == identity:
            profile.vector = model.fold_in_user(rec, profile.weights)
        return profile
    pks = list(profile.weights)
    matrix = np.stack([vectors[pk] for pk in pks]).astype(np.float64)
    w = np.array([profile.weights[pk] for pk in pks])
    total = np.abs(w).sum()
    mean = (w[:, None] * matrix).sum(axis=0) / total
    profile.vector = unit_vector(mean, min_norm=1e-9)
    return profile


def user_vector(
    user_id: Any, rec: Recommendable, encoder: str, *, identity: str | None = None
) -> np.ndarray | None:
    """The user's current vector of one encoder identity (default: the live version's): the
    stored one when fresh, otherwise computed now."""
    ct = content_type_of(rec.model)
    if identity is None:
        identity = live_identity(encoder)
    stored = UserEmbedding.objects.filter(
        user_id=user_id, content_type_id=ct.id, encoder=encoder, is_stale=False
    )
    if identity is not None:
        stored = stored.filter(identity=identity)
    vector = stored.values_list("vector", flat=True).first()
    if vector is not None:
        return parse_vector(vector)
    return user_profile(user_id, rec, encoder, identity=identity).vector


def refresh_user_vector(
    user_id: Any,
    model_or_label: Any = None,
    *,
    encoder: str | None = None,
    identity: str | None = None,
) -> int:
    """Recompute and store the vectors of one user (for one registered model, or all).

    Writes one :class:`UserEmbedding` per encoder and version (live and pending; or only
    ``encoder`` and ``identity`` when given), or deletes it when the user no longer has a
    usable vector. Returns the number of vectors written.
    """
    recs = [registry.get(model_or_label)] if model_or_label is not None else registry.all()
    written = 0
    for rec in recs:
        ct = content_type_of(rec.model)
        for alias in rec.get_encoders():
            if encoder is not None and alias != encoder:
                continue
            identities = [identity] if identity is not None else user_identities(alias)
            for version in identities:
                written += _store_user_vector(user_id, rec, ct.id, alias, version)
    return written


def _store_user_vector(
    user_id: Any, rec: Recommendable, ct_id: int, encoder: str, identity: str | None
) -> int:
    profile = user_profile(user_id, rec, encoder, identity=identity)
    rows = UserEmbedding.objects.filter(user_id=user_id, content_type_id=ct_id, encoder=encoder)
    if identity is not None:
        rows = rows.filter(identity=identity)
    elif profile.vector is not None:
        # No version registered: one vector per encoder, of the newest stored identity.
        rows = rows.exclude(identity=profile.identity)
    if profile.vector is None or identity is None:
        rows.delete()
    if profile.vector is None:
        return 0
    UserEmbedding.objects.bulk_create(
        [
            UserEmbedding(
                user_id=user_id,
                content_type_id=ct_id,
                encoder=encoder,
                identity=profile.identity,
                dimensions=int(profile.vector.shape[0]),
                vector=profile.vector,
                interaction_count=profile.interaction_count,
                is_stale=False,
                updated_at=timezone.now(),
            )
        ],
        update_conflicts=True,
        unique_fields=["user", "content_type", "encoder", "identity"],
        update_fields=["dimensions", "vector", "interaction_count", "is_stale", "updated_at"],
    )
    return 1


def refresh_user_vectors(
    user_ids: Sequence[Any],
    model_or_label: Any = None,
    *,
    encoder: str | None = None,
    identity: str | None = None,
) -> int:
    """:func:`refresh_user_vector` for several users; returns vectors written."""
    return sum(
        refresh_user_vector(user_id, model_or_label, encoder=encoder, identity=identity)
        for user_id in user_ids
    )


def users_with_interactions(
    content_type_id: int | None = None,
    object_pks: Sequence[str] | None = None,
    batch_size: int = 1000,
) -> Iterable[list[Any]]:
    """Distinct user ids with interactions (on given objects), by keyset pages of ``batch_size``."""
    qs = Interaction.objects.all()
    if content_type_id is not None:
        qs = qs.filter(content_type_id=content_type_id)
    if object_pks is not None:
        qs = qs.filter(object_pk__in=list(object_pks))
    return keyset_pages(qs.distinct(), "user_id", batch_size)


def rebuild_user_vectors(
    model_or_label: Any = None,
    *,
    user_ids: Sequence[Any] | None = None,
    batch_size: int = 500,
    progress=None,
    encoder: str | None = None,
    identity: str | None = None,
) -> int:
    """Recompute every user vector (of one model, or all) from scratch; returns vectors written.

    Users are read by keyset pages; vectors of users without interactions any more are removed.
    ``encoder`` and ``identity`` restrict the rebuild to one encoder version (a pending version
    about to go live, :func:`embrec.switching.switch`).
    """
    recs = [registry.get(model_or_label)] if model_or_label is not None else registry.all()
    written = 0
    for rec in recs:
        ct = content_type_of(rec.model)
        if user_ids is not None:
            pages: Iterable[list[Any]] = [list(user_ids)]
        else:
            UserEmbedding.objects.filter(content_type_id=ct.id).exclude(
                user_id__in=Interaction.objects.filter(content_type_id=ct.id).values("user_id")
            ).delete()
            pages = users_with_interactions(ct.id, batch_size=batch_size)
        for page in pages:
            with transaction.atomic():
                count = refresh_user_vectors(page, rec.model, encoder=encoder, identity=identity)
            written += count
            if progress:
                progress(len(page), count)
    return written


def on_items_embedded(content_type_id: int, encoder: str, object_pks: Sequence[str]) -> int:
    """Called by the write path after it wrote vectors for ``object_pks``.

    Marks the stored vectors of users who interacted with those items stale (so reads compute
    fresh ones) and, after commit, queues a task that recomputes them. Returns how many stored
    vectors were marked.
    """
    pks = [str(pk) for pk in object_pks]
    if not pks:
        return 0
    users = Interaction.objects.filter(content_type_id=content_type_id, object_pk__in=pks)
    if not users.exists():
        return 0
    dependent = UserEmbedding.objects.filter(
        content_type_id=content_type_id,
        encoder=encoder,
        user_id__in=users.values("user_id"),
    )
    # Rows a running refresh holds are skipped, not waited for (a refresh of many users would
    # otherwise hold up the drain, and the next edit's vectors behind it): that refresh, or the
    # one queued below, rewrites them.
    marked = UserEmbedding.objects.filter(
        pk__in=dependent.select_for_update(skip_locked=True).values("pk")
    ).update(is_stale=True)
    _after_commit(_queue_items_refresh, content_type_id, encoder, pks)
    return marked


def refresh_for_items(content_type_id: int, encoder: str, object_pks: Sequence[str]) -> int:
    """Recompute the vectors of every user who interacted with ``object_pks``."""
    ct = ContentType.objects.get_for_id(content_type_id)
    model = ct.model_class()
    if model is None or not registry.is_registered(model):
        return 0
    written = 0
    for page in users_with_interactions(content_type_id, object_pks):
        with transaction.atomic():
            written += refresh_user_vectors(page, model)
    return written
