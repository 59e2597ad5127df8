"""Save/delete handlers: write an outbox row in the same transaction as the change."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save


def _on_save(sender, instance, raw=False, **kwargs) -> None:
    if raw:  # loaddata: fixtures are indexed by embrec_reindex, not row by row
        return
    from embrec.indexing import enqueue

    enqueue(sender, [instance.pk])


def _on_delete(sender, instance, **kwargs) -> None:
    from embrec.indexing import enqueue
    from embrec.models import OutboxEntry

    enqueue(sender, [instance.pk], action=OutboxEntry.DELETE)


def _uid(model, kind: str) -> str:
    return f"embrec:{kind}:{model._meta.label_lower}"


def connect_model(model) -> None:
    post_save.connect(_on_save, sender=model, dispatch_uid=_uid(model, "save"), weak=False)
    post_delete.connect(_on_delete, sender=model, dispatch_uid=_uid(model, "delete"), weak=False)


def disconnect_model(model) -> None:
    post_save.disconnect(sender=model, dispatch_uid=_uid(model, "save"))
    post_delete.disconnect(sender=model, dispatch_uid=_uid(model, "delete"))
