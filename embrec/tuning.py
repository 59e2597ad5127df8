"""The tuned configuration written by ``manage.py embrec_tune`` and read by the read path.

``embrec_tune`` searches, on a validation split of the site's own interactions, the read path's
profile and blend settings (and a hybrid encoder's part weights) and writes the winner to the JSON
file named by ``EMBREC["TUNED_CONFIG"]``::

    {
      "version": 1,
      "model": "catalog.movie",
      "encoder": "hybrid",
      "settings": {"USER_VECTOR_MAX_INTERACTIONS": 3, "RECOMMEND_POPULARITY": 0.6, ...},
      "encoder_parts": {"hybrid": [{"encoder": "item2vec", "weight": 1.0}, ...]},
      ...
    }

Only the keys in :data:`TUNABLE` are used, and only where the site's ``settings.EMBREC`` does not
set them: an explicit setting always wins (``embrec.conf`` asks :func:`tuned_settings` for the
others). The file is read lazily and re-read when it changes (its modification time), so a new
``embrec_tune`` run takes effect without a restart; a missing file means "not tuned yet".
``encoder_parts`` is advice: part weights change the stored vectors, so a site copies them into
``EMBREC["ENCODERS"]`` and reindexes.

This module reads files only; it imports nothing from the rest of embrec.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

#: Settings a tuned configuration may provide, with their validators.
TUNABLE: dict[str, Any] = {
    "USER_VECTOR_MAX_INTERACTIONS": lambda v: isinstance(v, int) and v >= 1,
    "USER_VECTOR_WEIGHTING": lambda v: v in ("uniform", "weighted"),
    "USER_VECTOR_HALF_LIFE_DAYS": lambda v: v is None or (isinstance(v, int | float) and v > 0),
    "RECOMMEND_POPULARITY": lambda v: isinstance(v, int | float) and 0 <= v < 1,
    "RERANK_POOL_FACTOR": lambda v: isinstance(v, int) and v >= 1,
    "RERANK_POPULAR_CANDIDATES": lambda v: isinstance(v, int) and v >= 0,
}

VERSION = 1

_lock = threading.Lock()
_cache: dict[str, tuple[float, dict[str, Any]]] = {}


def load(path: str | os.PathLike | None) -> dict[str, Any]:
    """The whole tuned configuration at ``path`` (``{}`` when ``path`` is None or missing).

    Cached per path and re-read when the file's modification time changes. A file that is not a
    valid tuned configuration raises ``ImproperlyConfigured`` naming the setting.
    """
    if not path:
        return {}
    key = str(path)
    try:
        mtime = os.stat(key).st_mtime_ns
    except FileNotFoundError:
        return {}
    cached = _cache.get(key)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    with _lock:
        try:
            data = json.loads(Path(key).read_text())
        except (OSError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"EMBREC['TUNED_CONFIG'] = {key!r} cannot be read as JSON: {exc}"
            ) from exc
        validate(data, source=key)
        _cache[key] = (mtime, data)
    return data


def tuned_settings(path: str | os.PathLike | None) -> dict[str, Any]:
    """The :data:`TUNABLE` settings of the tuned configuration at ``path``."""
    return load(path).get("settings", {})


def validate(data: Any, *, source: str = "tuned configuration") -> None:
    """Raise ``ImproperlyConfigured`` unless ``data`` is a valid tuned configuration."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ImproperlyConfigured(
            f"EMBREC['TUNED_CONFIG'] ({source}) is not a version {VERSION} tuned configuration; "
            "rerun manage.py embrec_tune."
        )
    values = data.get("settings", {})
    if not isinstance(values, dict):
        raise ImproperlyConfigured(f"EMBREC['TUNED_CONFIG'] ({source}): 'settings' must be a dict.")
    for name, value in values.items():
        check = TUNABLE.get(name)
        if check is None or not check(value):
            raise ImproperlyConfigured(
                f"EMBREC['TUNED_CONFIG'] ({source}): {name} = {value!r} is not a tunable setting "
                f"or has a bad value (tunable: {', '.join(sorted(TUNABLE))})."
            )


def write(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Validate and write a tuned configuration atomically (a reader never sees half a file)."""
    data = {"version": VERSION, **data}
    validate(data, source=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    _cache.pop(str(path), None)
    return path
