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
            config = encoder_config(alias)
            cls, problems = encoder_class(alias, config)
            if cls is None:
                raise ImproperlyConfigured(problems[0].message)
            encoder = cls(alias, **config.get("OPTIONS", {}))
            _encoders[alias] = encoder
    return encoder


def reset_encoders() -> None:
    """Forget loaded encoders (settings changed, or tests)."""
    with _lock:
        _encoders.clear()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "EMBREC":
        reset_encoders()


setting_changed.connect(_on_setting_changed)
