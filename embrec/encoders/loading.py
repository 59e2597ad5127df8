"""Load encoders by alias, once per process."""

from __future__ import annotations

import threading

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from embrec.conf import embrec_settings
from embrec.encoders.base import BaseEncoder

_lock = threading.Lock()
_encoders: dict[str, BaseEncoder] = {}
_versioned: dict[tuple[str, str], BaseEncoder | None] = {}


def encoder_config(alias: str) -> dict:
    encoders = embrec_settings.ENCODERS
    if alias not in encoders:
        known = ", ".join(sorted(encoders)) or "(none)"
        raise ImproperlyConfigured(
            f"Unknown encoder alias {alias!r}: add it to EMBREC['ENCODERS'] (configured: {known})."
        )
    config = encoders[alias]
    if not isinstance(config, dict) or "CLASS" not in config:
        raise ImproperlyConfigured(
            f"EMBREC['ENCODERS'][{alias!r}] must be a dict with a 'CLASS' dotted path."
        )
    return config


def get_encoder(alias: str) -> BaseEncoder:
    """Return the process-wide encoder configured under ``alias``."""
    encoder = _encoders.get(alias)
    if encoder is not None:
        return encoder
    with _lock:
        encoder = _encoders.get(alias)
        if encoder is None:
            encoder = _build(alias, encoder_config(alias), f"EMBREC['ENCODERS'][{alias!r}]")
            _encoders[alias] = encoder
    return encoder


def _build(alias: str, config: dict, where: str) -> BaseEncoder:
    try:
        cls = import_string(config["CLASS"])
    except ImportError as exc:
        raise ImproperlyConfigured(f"{where}['CLASS'] cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseEncoder)):
        raise ImproperlyConfigured(f"{where}['CLASS'] must be a BaseEncoder subclass.")
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
            candidate = _build(alias, config, f"The stored configuration of {alias!r} {identity}")
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
