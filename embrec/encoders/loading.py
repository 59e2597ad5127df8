"""Load encoders by alias, once per process."""

from __future__ import annotations

import threading

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from embrec.conf import embrec_settings
from embrec.encoders.base import BaseEncoder

_lock = threading.Lock()
_encoders: dict[str, BaseEncoder] = {}


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
            config = encoder_config(alias)
            try:
                cls = import_string(config["CLASS"])
            except ImportError as exc:
                raise ImproperlyConfigured(
                    f"EMBREC['ENCODERS'][{alias!r}]['CLASS'] cannot be imported: {exc}"
                ) from exc
            if not (isinstance(cls, type) and issubclass(cls, BaseEncoder)):
                raise ImproperlyConfigured(
                    f"EMBREC['ENCODERS'][{alias!r}]['CLASS'] must be a BaseEncoder subclass."
                )
            encoder = cls(alias, **config.get("OPTIONS", {}))
            _encoders[alias] = encoder
    return encoder


def reset_encoders() -> None:
    """Forget loaded encoders (settings changed, or tests)."""
    with _lock:
        _encoders.clear()
