"""Save/delete receivers: write an outbox row in the same transaction as the change.

:meth:`embrec.apps.EmbrecConfig.ready` connects them once, for every sender; they act on the
models of the :data:`~embrec.registry.registry` (one dict lookup for any other model's save).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import post_delete, post_save

from embrec import indexing
from embrec.models import OutboxEntry
from embrec.registry import registry

_SAVE_UID = "embrec:save"
_DELETE_UID = "embrec:delete"


def on_save(
    sender: type[models.Model], instance: models.Model, raw: bool = False, **kwargs: Any
) -> None:
    """``post_save``: queue a registered object for (re)embedding."""
    if raw:  # loaddata: fixtures are indexed by embrec_reindex, not row by row
        return
    if registry.is_registered(sender):
        indexing.enqueue(sender, [instance.pk])


def on_delete(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    """``post_delete``: queue the removal of a registered object's vectors."""
    if registry.is_registered(sender):
        indexing.enqueue(sender, [instance.pk], action=OutboxEntry.DELETE)


def connect() -> None:
    """Connect the receivers (idempotent)."""
    post_save.connect(on_save, dispatch_uid=_SAVE_UID, weak=False)
    post_delete.connect(on_delete, dispatch_uid=_DELETE_UID, weak=False)


def disconnect() -> None:
    """Disconnect the receivers: saves no longer write outbox rows (until :func:`connect`)."""
    post_save.disconnect(dispatch_uid=_SAVE_UID)
    post_delete.disconnect(dispatch_uid=_DELETE_UID)
