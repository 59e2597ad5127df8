"""Load encoders by alias, once per process."""

from __future__ import annotations

import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from embrec.conf import embrec_settings, encoder_class
from embrec.encoders.base import BaseEncoder

_lock = threading.Lock()
_encoders: dict[str, BaseEncoder] = {}
_versioned: dict[tuple[str, str], BaseEncoder | None] = {}


def encoder_config(alias: str) -> dict[str, Any]:
    """The entry ``EMBREC["ENCODERS"][alias]``; ``ImproperlyConfigured`` for an unknown alias."""
    encoders = embrec_settings.ENCODERS
    if alias not in encoders:
        known = ", ".join(sorted(encoders)) or "(none)"
        raise ImproperlyConfigured(
            f"Unknown encoder alias {alias!r}: add it to EMBREC['ENCODERS'] (configured: {known})."
        )
    return encoders[alias]


def get_encoder(alias: str) -> BaseEncoder:
    """Return the process-wide encoder configured under ``alias``."""
    encoder = _encoders.get(alias)
    if encoder is not None:
        return encoder
    with _lock:
        encoder = _encoders.get(alias)
        if encoder is None:
            encoder = _build(alias, encoder_config(alias))
            _encoders[alias] = encoder
    return encoder


def _build(alias: str, config: dict) -> BaseEncoder:
    cls, problems = encoder_class(alias, config)
    if cls is None:
        raise ImproperlyConfigured(problems[0].message)
    return cls(alias, **config.get("OPTIONS", {}))


def get_versioned_encoder(alias: str, identity: str, config: dict) -> BaseEncoder | None:
    """The encoder of ``alias`` whose vectors have ``identity``, or ``None`` if this process
    cannot build it.

    The configured encoder (:func:`get_encoder`) when its identity matches; otherwise one built
    from ``config`` (the ``CLASS`` and ``OPTIONS`` stored with an
    :class:`~embrec.models.EncoderVersion`) when that gives ``identity``. A model whose files were
    replaced in place (a retrained item2vec, a fine-tuned model) cannot be rebuilt: ``None``.
    Built encoders are kept for the life of the process, like configured ones.
    """
    try:
        configured = get_encoder(alias)
        if configured.identity.as_string() == identity:
            return configured
    except ImproperlyConfigured:
        pass  # the alias left the settings: only its stored configuration can rebuild it
    key = (alias, identity)
    with _lock:
        if key in _versioned:
            return _versioned[key]
    encoder = None
    if isinstance(config, dict) and "CLASS" in config:
        try:
            candidate = _build(alias, config)
            if candidate.identity.as_string() == identity:
                encoder = candidate
        except Exception:  # the stored class is gone or its model cannot be read any more
            encoder = None
    with _lock:
        _versioned[key] = encoder
    return encoder


def reset_encoders() -> None:
    """Forget loaded encoders (settings changed, or tests)."""
    with _lock:
        _encoders.clear()
        _versioned.clear()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "EMBREC":
        reset_encoders()


setting_changed.connect(_on_setting_changed)
