"""Encoder versions: which identity of each encoder alias is live, which one is pending.

An encoder alias (a key of ``EMBREC["ENCODERS"]``) produces vectors of one *identity* at a time:
model name, revision, dimensions and normalisation (:class:`~embrec.encoders.EncoderIdentity`).
When the settings name another model (or a new revision, or a fine-tuned model), its identity
changes. Instead of overwriting the live vectors one batch at a time (which would make queries
compare a new model's vectors with an old one's until the re-embed ends), the new identity is
registered as the alias's *pending* :class:`~embrec.models.EncoderVersion` and backfilled beside
the live one:

* the read path (:mod:`embrec.queries`) reads only rows of :func:`live_identity` and encodes
  search text with :func:`live_encoder`;
* the write path (:mod:`embrec.indexing`) writes each changed object for every version in
  :func:`write_targets` (live and pending), each into its own partial HNSW index;
* :mod:`embrec.switching` backfills the pending version, flips it live in one transaction once
  complete, and prunes the retired one after ``EMBREC["VERSION_GRACE_PERIOD"]``.

This module only reads and registers versions; it imports nothing of the write or read path.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from embrec.conf import embrec_settings
from embrec.encoders import BaseEncoder, get_encoder, get_versioned_encoder
from embrec.encoders.base import INDEX_OPTION_NAMES
from embrec.encoders.loading import encoder_config
from embrec.exceptions import VersionUnavailable
from embrec.models import EncoderVersion
from embrec.storage import IndexSpec

logger = logging.getLogger("embrec")

LIVE = EncoderVersion.LIVE
PENDING = EncoderVersion.PENDING
RETIRED = EncoderVersion.RETIRED


#: Encoder options that choose how vectors are indexed, not what they are: not part of a
#: version's identity, and taken from the current settings for every version.
INDEX_OPTION_KEYS = tuple(sorted(INDEX_OPTION_NAMES))


def serving_options(alias: str, config: dict | None) -> dict:
    """The ``OPTIONS`` a version's index is built and searched with: the version's stored
    options, with the index keys (:data:`INDEX_OPTION_KEYS`) from the current settings while
    ``alias`` is configured. How vectors are indexed is a serving choice: changing it rebuilds
    the index (``embrec_reindex``) without re-encoding and without a new version."""
    options = dict((config or {}).get("OPTIONS") or {})
    if alias in embrec_settings.ENCODERS:
        current = embrec_settings.ENCODERS[alias].get("OPTIONS") or {}
        for key in INDEX_OPTION_KEYS:
            options.pop(key, None)
            if key in current:
                options[key] = current[key]
    return options


@dataclass(frozen=True)
class WriteTarget:
    """One version the write path encodes a changed object for."""

    identity: str
    encoder: BaseEncoder
    live: bool

    def index_spec(self, content_type_id: int) -> IndexSpec:
        """The partial HNSW index of this version's vectors of one model."""
        return IndexSpec.for_encoder(
            content_type_id,
            self.encoder.alias,
            self.encoder.dimensions,
            serving_options(self.encoder.alias, {"OPTIONS": self.encoder.options}),
            self.identity,
        )


@dataclass(frozen=True)
class ReadVersion:
    """What one query reads: the live identity of an alias, looked up once per query so that
    the query vector and the candidate rows always come from the same version."""

    alias: str
    identity: str | None
    config: dict

    @property
    def options(self) -> dict:
        """The version's encoder ``OPTIONS`` (what its index stores)."""
        if self.identity is None or not self.config:
            return dict(get_encoder(self.alias).options)
        return serving_options(self.alias, self.config)

    def spec(self, content_type_id: int, dimensions: int) -> IndexSpec:
        """The index (and predicate) of this version's vectors of one model."""
        return IndexSpec.for_encoder(
            content_type_id, self.alias, int(dimensions), self.options, self.identity
        )

    def encoder(self) -> BaseEncoder:
        """The encoder of this version, to encode query text (:func:`live_encoder`)."""
        if self.identity is None:
            return get_encoder(self.alias)
        encoder = get_versioned_encoder(self.alias, self.identity, self.config)
        if encoder is None:
            raise VersionUnavailable(
                f"Encoder {self.alias!r}: the live version {self.identity} cannot be loaded in "
                f"this process (its model changed in place); queries that encode text wait for "
                f"the pending version to go live."
            )
        return encoder


def read_version(alias: str) -> ReadVersion:
    """The live version of ``alias`` for one query (identity ``None`` before any version is
    registered: every stored row is read, as before versions existed)."""
    row = (
        EncoderVersion.objects.filter(alias=alias, state=LIVE)
        .values_list("identity", "config")
        .first()
    )
    if row is None:
        return ReadVersion(alias, None, {})
    return ReadVersion(alias, row[0], row[1] or {})


def live_version(alias: str) -> EncoderVersion | None:
    """The live :class:`EncoderVersion` of ``alias`` (``None`` before the first write)."""
    return EncoderVersion.objects.filter(alias=alias, state=LIVE).first()


def pending_version(alias: str) -> EncoderVersion | None:
    """The version of ``alias`` being backfilled, if any."""
    return EncoderVersion.objects.filter(alias=alias, state=PENDING).first()


def live_identity(alias: str) -> str | None:
    """The identity whose vectors queries of ``alias`` read; ``None`` when no version is
    registered yet (nothing written since the upgrade: every stored row is read)."""
    return (
        EncoderVersion.objects.filter(alias=alias, state=LIVE)
        .values_list("identity", flat=True)
        .first()
    )


def active_versions(alias: str) -> list[EncoderVersion]:
    """The live version, then the pending one (either may be missing)."""
    rows = list(EncoderVersion.objects.filter(alias=alias, state__in=[LIVE, PENDING]))
    return sorted(rows, key=lambda v: v.state != LIVE)


def encoder_for(version: EncoderVersion) -> BaseEncoder | None:
    """The encoder producing ``version``'s vectors in this process, ``None`` if it cannot."""
    return get_versioned_encoder(version.alias, version.identity, version.config)


def encoder_of(alias: str, identity: str) -> BaseEncoder | None:
    """The encoder producing ``identity`` under ``alias`` in this process (``None`` if none)."""
    config = (
        EncoderVersion.objects.filter(alias=alias, identity=identity)
        .values_list("config", flat=True)
        .first()
    )
    return get_versioned_encoder(alias, identity, config or {})


def user_identities(alias: str) -> list[str | None]:
    """The identities user vectors of ``alias`` are kept for: live and pending (``[None]``
    before any version is registered: the newest stored identity)."""
    return [v.identity for v in active_versions(alias)] or [None]


def live_encoder(alias: str) -> BaseEncoder:
    """The encoder of ``alias``'s live version (to encode query text).

    The configured encoder when no version is registered yet or when it is the live one; during
    a backfill, the live model rebuilt from its stored configuration. Raises
    :class:`VersionUnavailable` when that cannot be done.
    """
    return read_version(alias).encoder()


def write_targets(alias: str) -> list[WriteTarget]:
    """The versions the write path encodes for: live first, then pending.

    Without a registered version, the configured encoder is the live one. A version this
    process cannot build (see :func:`encoder_for`) is skipped with a warning: the object's
    vector of that version stays as it was (the backfill or the next save rewrites it).
    """
    versions = active_versions(alias)
    if not versions:
        encoder = get_encoder(alias)
        return [WriteTarget(encoder.identity.as_string(), encoder, True)]
    targets = []
    for version in versions:
        built = encoder_for(version)
        if built is None:
            logger.warning(
                "embrec: encoder %r version %s cannot be built in this process; its vectors "
                "are not updated here.",
                alias,
                version.identity,
            )
            continue
        targets.append(WriteTarget(version.identity, built, version.state == LIVE))
    return targets


def stored_config(alias: str) -> dict:
    """The settings entry of ``alias`` as JSON (``CLASS`` and ``OPTIONS``), kept with a version."""
    config = encoder_config(alias)
    raw = {"CLASS": config["CLASS"], "OPTIONS": config.get("OPTIONS", {})}
    return json.loads(json.dumps(raw, default=str))


def _most_stored_identity(alias: str) -> tuple[str, int] | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT identity, dimensions FROM embrec_embedding WHERE encoder = %s "
            "GROUP BY identity, dimensions ORDER BY count(*) DESC, identity LIMIT 1",
            [alias],
        )
        row = cursor.fetchone()
    return (row[0], int(row[1])) if row else None


def sync_configured(alias: str) -> EncoderVersion | None:
    """Register the configured identity of ``alias``; returns a version newly made pending.

    * No version yet: the identity of the stored vectors (the most common one, after an
      upgrade) becomes live, or the configured identity when nothing is stored.
    * The configured identity is live or pending already: nothing changes.
    * Otherwise it becomes the pending version (a retired version of that identity is taken
      back; an older pending one is retired, abandoned). Its backfill is started by
      :func:`embrec.switching.start_backfills`.

    A process whose settings still name the live model changes nothing, so that workers of a
    rolling deploy do not undo each other.
    """
    encoder = get_encoder(alias)
    identity = encoder.identity.as_string()
    # The common case, one read and no lock: the configured identity is registered already.
    if (
        EncoderVersion.objects.filter(alias=alias, identity=identity, state__in=[LIVE, PENDING])
        .exclude(state=LIVE, config={})
        .exists()
    ):
        return None
    config = stored_config(alias)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"embrec.version:{alias}"]
            )
        versions = {v.identity: v for v in EncoderVersion.objects.filter(alias=alias)}
        live = next((v for v in versions.values() if v.state == LIVE), None)
        if live is None:
            stored = _most_stored_identity(alias)
            if stored is None or stored[0] == identity:
                stored = (identity, encoder.dimensions)
            now = timezone.now()
            live = versions.get(stored[0]) or EncoderVersion(alias=alias, identity=stored[0])
            live.dimensions = stored[1]
            live.state = LIVE
            live.config = config if stored[0] == identity else {}
            live.live_since = now
            live.backfill_started_at = live.backfill_queued_at = now
            live.retired_at = None
            live.save()
            versions[live.identity] = live
        if live.identity == identity:
            if not live.config:
                live.config = config
                live.save(update_fields=["config"])
            return None
        current = versions.get(identity)
        if current is not None and current.state == PENDING:
            return None
        EncoderVersion.objects.filter(alias=alias, state=PENDING).update(
            state=RETIRED, retired_at=timezone.now()
        )
        version = current or EncoderVersion(alias=alias, identity=identity)
        version.dimensions = encoder.dimensions
        version.config = config
        version.state = PENDING
        version.backfill_started_at = version.backfill_queued_at = None
        version.retired_at = None
        version.live_since = None
        version.save()
    logger.info(
        "embrec: encoder %r: %s is pending; queries keep reading %s until it is backfilled.",
        alias,
        identity,
        live.identity,
    )
    return version


def sync_all(aliases) -> list[EncoderVersion]:
    """:func:`sync_configured` for several aliases; an alias whose encoder cannot be loaded
    is logged and skipped. Returns the versions newly made pending."""
    created = []
    for alias in sorted(set(aliases)):
        try:
            version = sync_configured(alias)
        except ImproperlyConfigured as exc:
            logger.warning("embrec: cannot register the version of encoder %r (%s).", alias, exc)
            continue
        if version is not None:
            created.append(version)
    return created


def grace_period() -> float:
    """Seconds a retired version's vectors are kept (``EMBREC["VERSION_GRACE_PERIOD"]``)."""
    return float(embrec_settings.VERSION_GRACE_PERIOD)
