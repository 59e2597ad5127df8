"""Database tables of embrec.

* :class:`Embedding` — one vector per (object, encoder), with the content hash and the identity of
  the encoder that produced it. Vectors of all models and encoders share one table; each
  (model, encoder) pair gets its own partial HNSW index (see :mod:`embrec.storage`).
* :class:`OutboxEntry` — work waiting for a worker: "this object changed". Written in the same
  transaction as the change, deleted in the same transaction as the vector write.
* :class:`DrainSignal` — one row recording that a drain task is queued and not yet started, so
  that a burst of saves queues one task instead of thousands.
* :class:`Interaction` — a user's event on an object (view, like, purchase, dislike…).
* :class:`UserEmbedding` — a user's taste vector per encoder, built from interactions.
* :class:`EncoderVersion` — which identity of an encoder alias queries read (``live``), which one
  is being backfilled beside it (``pending``) and which ones wait to be pruned (``retired``).
* :class:`PopularityUser`, :class:`PopularityCount`, :class:`PopularityState` — popularity
  (distinct users with a positive interaction in the window) per object, kept up to date by
  database triggers on the interaction table in the same transaction as each interaction write
  (see :mod:`embrec.popularity`).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models.functions import Collate, Now
from pgvector.django import VectorField


class Embedding(models.Model):
    """The vector of one object under one encoder identity.

    An object has one row per encoder alias and identity: while a new model is backfilled, its
    vectors are written beside the live model's (see :class:`EncoderVersion`).

    Rows are derived data (rebuilt from the objects at any time), written in bulk by the workers.
    ``content_type`` is therefore a foreign key without a database constraint or an index of its
    own: Django still deletes the rows with their content type (``on_delete=CASCADE`` runs in
    Python), lookups by content type use the unique (content type, pk, encoder) index, and bulk
    writes skip one deferred constraint check per row. The table keeps only the indexes that
    serve queries (primary key, that unique index, the HNSW indexes): every other one would be
    one more insert per written vector.
    """

    content_type = models.ForeignKey(
        ContentType,
        on_delete=models.CASCADE,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    object_pk = models.CharField(max_length=64)
    encoder = models.CharField(max_length=64, help_text="Encoder alias from EMBREC['ENCODERS'].")
    identity = models.CharField(max_length=255, help_text="Model, revision, dimensions, norm.")
    dimensions = models.PositiveIntegerField()
    vector = VectorField()
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_pk", "encoder", "identity"],
                name="embrec_embedding_version_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.content_type.app_label}.{self.content_type.model}:{self.object_pk} [{self.encoder}]"


class OutboxEntry(models.Model):
    """An object whose vectors must be recomputed (or removed)."""

    PENDING = "pending"
    FAILED = "failed"
    STATES = [(PENDING, "pending"), (FAILED, "failed")]

    INDEX = "index"
    DELETE = "delete"
    ACTIONS = [(INDEX, "index"), (DELETE, "delete")]

    id = models.BigAutoField(primary_key=True)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_pk = models.CharField(max_length=64)
    action = models.CharField(max_length=8, choices=ACTIONS, default=INDEX)
    encoder = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="Only this encoder; blank: all.",
    )
    force = models.BooleanField(default=False, help_text="Re-encode even if the text is unchanged.")
    state = models.CharField(max_length=8, choices=STATES, default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "embrec_outbox"
        verbose_name = "outbox entry"
        verbose_name_plural = "outbox entries"
        indexes = [
            models.Index(fields=["state", "id"], name="embrec_outbox_state_id"),
            models.Index(fields=["content_type", "object_pk"], name="embrec_outbox_obj"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.content_type_id}:{self.object_pk} ({self.state})"


class DrainSignal(models.Model):
    """Deduplicates drain tasks across processes (a single row, ``id = 1``).

    ``queued_at`` is set when a drain task is sent and cleared when a worker starts it. While it
    is set (and younger than ``EMBREC["SWEEP_AFTER"]``), saves do not queue another task: the
    queued one will see their outbox rows when it starts.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    queued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "embrec_drain_signal"

    def __str__(self) -> str:
        return f"drain queued at {self.queued_at}" if self.queued_at else "no drain queued"


class Interaction(models.Model):
    """One event of a user on an object; its kind maps to a weight in EMBREC settings."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="embrec_interactions",
    )
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_pk = models.CharField(max_length=64)
    kind = models.CharField(max_length=32)
    weight = models.FloatField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [
            models.Index(fields=["user", "created_at"], name="embrec_inter_user_at"),
            models.Index(fields=["content_type", "object_pk"], name="embrec_inter_obj"),
            # A user's seen/disliked items, excluded from every query for that user.
            models.Index(
                fields=["user", "content_type", "object_pk"], name="embrec_inter_user_obj"
            ),
        ]
        permissions = [
            (
                "view_user_recommendations",
                "Can view other users' recommendations and the history they are built from",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.kind} {self.content_type_id}:{self.object_pk}"


class UserEmbedding(models.Model):
    """A user's taste vector under one encoder identity, for one registered model.

    Built from item vectors of the same identity only: during a model switch a user has one row
    per version, so that personal recommendations never compare vectors of two models.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="embrec_embeddings",
    )
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    encoder = models.CharField(max_length=64)
    identity = models.CharField(max_length=255)
    dimensions = models.PositiveIntegerField()
    vector = VectorField()
    interaction_count = models.PositiveIntegerField(default=0)
    is_stale = models.BooleanField(default=False)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "content_type", "encoder", "identity"],
                name="embrec_user_embedding_version_unique",
            )
        ]

    def __str__(self) -> str:
        return f"user {self.user_id} [{self.encoder}]"


class EncoderVersion(models.Model):
    """One identity (model, revision, dimensions, normalisation) of an encoder alias.

    * ``live`` — the version every query reads (at most one per alias).
    * ``pending`` — a new identity being backfilled beside the live one (at most one per alias);
      the write path encodes changed objects with both, the read path ignores it until
      :func:`embrec.switching.switch` makes it live in one transaction.
    * ``retired`` — a former live version (or an abandoned pending one) whose vectors are kept
      for ``EMBREC["VERSION_GRACE_PERIOD"]`` seconds, then pruned.

    ``config`` keeps the encoder's ``CLASS`` and ``OPTIONS`` as they were when the version was
    registered, so that processes whose settings already name the next model can still encode
    search text with the live one.
    """

    LIVE = "live"
    PENDING = "pending"
    RETIRED = "retired"
    STATES = [(LIVE, "live"), (PENDING, "pending"), (RETIRED, "retired")]

    alias = models.CharField(max_length=64, help_text="Encoder alias from EMBREC['ENCODERS'].")
    identity = models.CharField(max_length=255)
    dimensions = models.PositiveIntegerField()
    config = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=8, choices=STATES)
    created_at = models.DateTimeField(db_default=Now())
    #: When every object was queued for this version (``None``: not yet).
    backfill_started_at = models.DateTimeField(null=True, blank=True)
    backfill_queued_at = models.DateTimeField(null=True, blank=True)
    live_since = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "embrec_encoder_version"
        constraints = [
            models.UniqueConstraint(
                fields=["alias", "identity"], name="embrec_encoder_version_unique"
            ),
            models.UniqueConstraint(
                fields=["alias"],
                condition=models.Q(state="live"),
                name="embrec_encoder_version_one_live",
            ),
            models.UniqueConstraint(
                fields=["alias"],
                condition=models.Q(state="pending"),
                name="embrec_encoder_version_one_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.alias} {self.identity} ({self.state})"


class PopularityUser(models.Model):
    """A user who counts towards an object's popularity: the time of the user's latest positive
    interaction on it, inside the popularity window.

    Written only by the triggers on the interaction table (and by
    :func:`embrec.popularity.rebuild_popularity`); a row leaves when the user has no positive
    interaction on the object any more, or when that time falls out of the window
    (:func:`embrec.popularity.expire_popularity`). The user and content type are plain columns
    for Django (no constraint, no cascade): deleting interactions is what removes rows.
    """

    id = models.BigAutoField(primary_key=True)
    content_type = models.ForeignKey(
        ContentType,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    object_pk = models.CharField(max_length=64)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    # NULL only inside the trigger's transaction (a row locked before its time is known).
    last_positive_at = models.DateTimeField(null=True)

    class Meta:
        db_table = "embrec_popularity_user"
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_pk", "user"], name="embrec_popuser_unique"
            )
        ]
        indexes = [models.Index(fields=["last_positive_at"], name="embrec_popuser_at")]

    def __str__(self) -> str:
        return f"user {self.user_id} counts for {self.content_type_id}:{self.object_pk}"


class PopularityCount(models.Model):
    """An object's popularity: how many :class:`PopularityUser` rows it has (rows at 0 are
    removed). Read by the ranking queries through the (content type, users, key) index."""

    id = models.BigAutoField(primary_key=True)
    content_type = models.ForeignKey(
        ContentType,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    object_pk = models.CharField(max_length=64)
    users = models.IntegerField()

    class Meta:
        db_table = "embrec_popularity_count"
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_pk"], name="embrec_popcount_unique"
            )
        ]
        indexes = [
            # Most users first, ties by key in code-point order (as Python sorts strings).
            models.Index(
                "content_type",
                models.F("users").desc(),
                Collate("object_pk", "C"),
                name="embrec_popcount_rank",
            )
        ]

    def __str__(self) -> str:
        return f"{self.content_type_id}:{self.object_pk}: {self.users} users"


class PopularityState(models.Model):
    """The window the popularity tables count (a single row, ``id = 1``): ``window_days``
    (``None``: all time) and ``cutoff``, the oldest positive interaction that still counts
    (``None``: all). The triggers read ``cutoff``; :func:`embrec.popularity.expire_popularity`
    moves it forward."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    window_days = models.FloatField(null=True)
    cutoff = models.DateTimeField(null=True)
    rebuilt_at = models.DateTimeField(null=True)

    class Meta:
        db_table = "embrec_popularity_state"

    def __str__(self) -> str:
        window = "all time" if self.window_days is None else f"{self.window_days:g} days"
        return f"popularity over {window} (since {self.cutoff})"


def content_type_of(model: type[models.Model] | models.Model) -> ContentType:
    """The content type embrec stores for ``model`` (a model class or instance).

    That of the model itself, a proxy included (``for_concrete_model=False``): two registered
    proxies of one table keep separate vectors. Django's content-type manager caches it per
    process, so this costs no query after the first call.
    """
    return ContentType.objects.get_for_model(model, for_concrete_model=False)
