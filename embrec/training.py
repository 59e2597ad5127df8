"""Training encoders on the site's interactions, then re-embedding what they changed.

The encoders (:mod:`embrec.encoders.trained`, :mod:`embrec.encoders.finetune`) learn and save
models; this module adds the write-path step: when a model's revision changed, every object of the
registrations using it (directly or through a hybrid) is queued for re-embedding under those
aliases. ``manage.py embrec_train`` / ``embrec_finetune`` and the ``embrec.train_item2vec`` /
``embrec.finetune`` Celery tasks call it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from embrec import indexing
from embrec.encoders.finetune import FinetunedEncoder
from embrec.encoders.loading import get_encoder
from embrec.encoders.trained import TrainedEncoder, dependent_aliases, registrations_using
from embrec.items import Recommendable
from embrec.models import content_type_of


def reindex_dependents(alias: str, recs: Sequence[Recommendable]) -> int:
    """Queue every object of ``recs`` for re-embedding under ``alias`` and the aliases built on
    it; returns the number queued."""
    aliases = dependent_aliases(alias)
    queued = 0
    for rec in recs:
        for name in rec.get_encoders():
            if name in aliases:
                queued += indexing.reindex(rec, encoder=name)
    return queued


def train_and_reindex(alias: str, *, reindex: bool = True) -> dict[str, Any]:
    """Train the trained encoder ``alias`` (item2vec, ALS, adaptive hybrid) on the
    ``Interaction`` table; when its revision changed, queue every object of the registrations
    using it (directly or in a hybrid) for re-embedding under those aliases. Returns a summary."""
    encoder = get_encoder(alias)
    if not isinstance(encoder, TrainedEncoder):
        raise ImproperlyConfigured(
            f"Encoder {alias!r} is not trained on interactions (item2vec, ALS, co-occurrence, adaptive hybrid)."
        )
    users = registrations_using(alias)
    ct_ids = [content_type_of(r.model).id for r in users]
    before = encoder.identity.revision
    result = encoder.train(content_type_ids=ct_ids or None, recs=users)
    queued = 0
    if reindex and result.revision != before:
        queued = reindex_dependents(alias, users)
    return {**result.as_dict(), "previous_revision": before, "queued": queued}


def finetune_and_reindex(
    alias: str,
    params: dict[str, Any] | None = None,
    *,
    reindex: bool = True,
    on_step: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune the encoder ``alias`` on the ``Interaction`` table; when its revision changed,
    queue every object of the registrations using it (directly or in a hybrid) for re-embedding
    under those aliases. Returns a summary dict."""
    encoder = get_encoder(alias)
    if not isinstance(encoder, FinetunedEncoder):
        raise ImproperlyConfigured(f"Encoder {alias!r} is not a fine-tuned text encoder.")
    recs = registrations_using(alias)
    result = encoder.train(params, registrations=recs or None, on_step=on_step)
    queued = 0
    if reindex and result.revision != result.previous_revision:
        queued = reindex_dependents(alias, recs)
    return {**result.as_dict(), "queued": queued}
