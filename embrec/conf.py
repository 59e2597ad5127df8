"""The ``EMBREC`` settings dict: defaults, validation and lazy access.

Read settings through ``embrec_settings.NAME``; values come from ``settings.EMBREC`` merged over
the tuned configuration of ``EMBREC["TUNED_CONFIG"]`` (:mod:`embrec.tuning`, for the few tunable
keys) and :data:`DEFAULTS` and are re-read whenever Django's ``setting_changed`` signal fires for
``EMBREC`` (``override_settings`` in tests; :mod:`embrec.encoders.loading` then forgets its
loaded encoders). Nothing is read at import time.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from embrec.tuning import TUNABLE, tuned_settings

if TYPE_CHECKING:
    from embrec.encoders.base import BaseEncoder

_MISSING = object()

DEFAULTS: dict[str, Any] = {
    # alias -> {"CLASS": dotted path, "OPTIONS": {...}}
    "ENCODERS": {
        "default": {
            "CLASS": "embrec.encoders.sentence_transformer.SentenceTransformerEncoder",
            "OPTIONS": {},
        },
    },
    # Encoder aliases a registration uses when it names none.
    "DEFAULT_ENCODERS": ["default"],
    # Celery queue for encoding work (run GPU workers with -Q embrec).
    "QUEUE": "embrec",
    # Outbox rows claimed per worker transaction.
    "BATCH_SIZE": 256,
    # Outbox rows older than this many seconds are re-kicked by the sweeper. Also how long a
    # queued-but-unstarted drain task suppresses further sends before it is presumed lost.
    "SWEEP_AFTER": 300,
    # Crashes of a whole batch (e.g. an encoder failing on every text) before its rows are
    # marked failed. A single poison object is marked failed at once.
    "MAX_ATTEMPTS": 5,
    # Longest a save (or a recorded interaction) waits for the broker when it queues a task, in
    # seconds: one connection attempt, no retries. With the broker down the outbox keeps the work.
    "KICK_TIMEOUT": 0.5,
    # Whether saves enqueue a drain task after commit. With False, run the sweeper or
    # ``embrec_drain`` yourself.
    "AUTO_KICK": True,
    # Encoder aliases embrec.preload_encoders() loads (model in memory, one warm-up encode) when
    # a process calls it at startup, e.g. in wsgi.py: the first search then skips the load.
    "PRELOAD_ENCODERS": [],
    # HNSW index parameters and the default ef_search for queries.
    "HNSW_M": 16,
    "HNSW_EF_CONSTRUCTION": 64,
    "EF_SEARCH": 100,
    # Bulk loads build the HNSW index once, after the vectors are written, instead of inserting
    # every row into the graph (pgvector's advice, and many times faster). A drain that writes
    # vectors for a (model, encoder) whose index does not exist yet defers the index while at
    # least this many outbox rows of that model are pending (or while vectors without the index
    # are already stored, e.g. after ``embrec_reindex --rebuild-index``); the index is built when
    # a drain empties that model's backlog, at the end of ``embrec_reindex --sync``, or by the
    # sweeper. Queries work meanwhile (exact scans). 0: never defer (index before the first write).
    "INDEX_BUILD_THRESHOLD": 10_000,
    # maintenance_work_mem for a deferred build (SET LOCAL, that transaction only): the build is
    # much faster while the graph fits in it (~2.2 kB per 384-d vector at m=16: 1GB holds ~470k;
    # see storage.hnsw_build_memory; a build that will not fit logs a warning). None keeps the
    # server's setting.
    "INDEX_BUILD_MAINTENANCE_WORK_MEM": "1GB",
    # max_parallel_maintenance_workers for a deferred build (None: the server's setting).
    "INDEX_BUILD_PARALLEL_WORKERS": None,
    # A new encoder identity (another model, revision or fine-tune under an existing alias) is
    # backfilled beside the live one while queries keep reading the live version. With True,
    # the alias switches to it in one transaction as soon as the backfill is complete (checked
    # after each drain and by the sweeper); with False, run ``manage.py embrec_switch``.
    "VERSION_AUTO_SWITCH": True,
    # Seconds the vectors of a retired version are kept after a switch before the sweeper (or
    # ``embrec_switch --prune``) deletes them and drops their index.
    "VERSION_GRACE_PERIOD": 86400,
    # Query limits.
    "DEFAULT_LIMIT": 10,
    "MAX_LIMIT": 100,
    "SEARCH_MAX_LENGTH": 512,
    # Interaction kinds and their weights; negative weights push the user vector away and hide
    # those items from that user's recommendations.
    "INTERACTION_WEIGHTS": {"view": 1.0, "like": 3.0, "purchase": 5.0, "dislike": -3.0},
    # Half-life of an interaction's weight in user vectors, in days (None: no decay).
    "USER_VECTOR_HALF_LIFE_DAYS": 30.0,
    # Half-lives are measured back from the user's latest interaction, not from now (see
    # embrec.interactions), so users of old or imported data keep their vectors.
    # User vectors are built from the user's this many most recently touched distinct items per
    # model (every event on those items counts). Small values follow current taste: 3 was best
    # on MovieLens (docs/EVALUATION.md).
    "USER_VECTOR_MAX_INTERACTIONS": 1000,
    # How events weigh in user vectors: "weighted" (each event's INTERACTION_WEIGHTS weight,
    # negatives subtract) or "uniform" (every positive event weighs 1, negative ones are left
    # out of the vector; they still hide their items from the user's results).
    "USER_VECTOR_WEIGHTING": "weighted",
    # pgvector iterative index scans ("relaxed_order", "strict_order" or "off"): keep scanning
    # the HNSW index until `limit` rows pass the filters and exclusions (pgvector >= 0.8).
    "ITERATIVE_SCAN": "relaxed_order",
    # hnsw.max_scan_tuples for iterative scans (None: pgvector's default, 20000).
    "MAX_SCAN_TUPLES": None,
    # Share (0-1) of popularity in the score of recommend() (and GET .../recommendations/) when
    # the caller gives none; 0.6 with USER_VECTOR_MAX_INTERACTIONS 3 was best on MovieLens.
    "RECOMMEND_POPULARITY": 0.0,
    # Re-ranking (MMR, popularity/recency blend) picks from limit * this many nearest candidates.
    "RERANK_POOL_FACTOR": 4,
    # With a popularity blend, this many of the most popular visible items join the nearest
    # candidates, so a popular item slightly farther away can still win (0: nearest only).
    "RERANK_POPULAR_CANDIDATES": 200,
    # Popularity = distinct users with a positive interaction in the last N days (None: all
    # time), blended as log1p(users) / log1p(most users of any visible item).
    "POPULARITY_WINDOW_DAYS": 90,
    # Popularity prior for items with little history (None: off): an item with n users scores
    # s * its own popularity + (1 - s) * that of this quantile (0-1) of the items' popularity,
    # s = n / (n + POPULARITY_PRIOR_STRENGTH). A new item then competes on its similarity.
    "POPULARITY_PRIOR": None,
    "POPULARITY_PRIOR_STRENGTH": 5.0,
    # Seconds a process reuses its popularity counts (they are recounted at once when an
    # interaction is added; this bounds staleness after deletions). 0: count on every query.
    "POPULARITY_CACHE_SECONDS": 60,
    # Half-life of the recency bonus, in days since an item was first embedded.
    "RECENCY_HALF_LIFE_DAYS": 30.0,
    # Most events one POST to the interactions endpoint may carry.
    "MAX_INTERACTION_BATCH": 100,
    # DRF permission and throttle classes for the API (dotted paths); None keeps DRF's defaults
    # (REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"] / ["DEFAULT_THROTTLE_CLASSES"]). Personal
    # endpoints (recommendations, interactions) always add IsAuthenticated; search always adds
    # embrec.api.throttling.SearchRateThrottle (rate "search" below).
    "API_PERMISSION_CLASSES": None,
    "API_THROTTLE_CLASSES": [
        "embrec.api.throttling.AnonRateThrottle",
        "embrec.api.throttling.UserRateThrottle",
    ],
    # Rates of embrec's throttles ("<n>/<s|min|hour|day>", None: off). Keys given here replace
    # the defaults one by one.
    "THROTTLE_RATES": {"anon": "100/min", "user": "1000/min", "search": "30/min"},
    # JSON file written by ``manage.py embrec_tune`` (None: no tuned configuration). Its
    # settings (embrec.tuning.TUNABLE: profile recency and weighting, popularity blend, candidate
    # pools) apply wherever this dict does not set them explicitly; the file is re-read when it
    # changes. E.g. BASE_DIR / ".embrec" / "tuned.json".
    "TUNED_CONFIG": None,
    # JSON report shown on the admin's "Evaluation report" page: one written by
    # ``manage.py embrec_evaluate --json PATH`` or ``embrec_tune``. None: the report embrec_tune
    # wrote beside TUNED_CONFIG.
    "EVALUATION_REPORT": None,
}

_IMPORT_STRINGS = {"API_PERMISSION_CLASSES", "API_THROTTLE_CLASSES"}
#: Dict settings whose keys, when given, replace the defaults one by one.
_MERGED = {"THROTTLE_RATES"}


class EmbrecSettings:
    """Lazy view of ``settings.EMBREC`` over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}
        self._user: dict[str, Any] | None = None

    @property
    def user_settings(self) -> dict[str, Any]:
        if self._user is None:
            value = getattr(settings, "EMBREC", {}) or {}
            problems = _shape_problems(value)
            if problems:
                raise ImproperlyConfigured(f"{problems[0].message} {problems[0].hint}")
            self._user = value
        return self._user

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(f"Invalid embrec setting: {name!r}")
        if name in TUNABLE and name not in self.user_settings:
            # Explicit settings win; then the tuned configuration (not cached here: the file is
            # re-read when embrec_tune rewrites it); then the default.
            tuned = tuned_settings(self.user_settings.get("TUNED_CONFIG"))
            if name in tuned:
                return _checked_choice(name, tuned[name])
        if name not in self._cache:
            if name in self.user_settings:
                value = self.user_settings[name]
                if name in _MERGED and isinstance(value, dict):
                    value = {**DEFAULTS[name], **value}
            else:
                value = copy.deepcopy(DEFAULTS[name])
            if name in _IMPORT_STRINGS and value is not None:
                try:
                    value = [import_string(v) if isinstance(v, str) else v for v in value]
                except ImportError as exc:
                    raise ImproperlyConfigured(
                        f"EMBREC[{name!r}] names a class that cannot be imported: {exc}"
                    ) from exc
            self._cache[name] = _checked_choice(name, value)
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()
        self._user = None


embrec_settings = EmbrecSettings()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "EMBREC":
        embrec_settings.reload()


setting_changed.connect(_on_setting_changed)


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class SettingProblem:
    """One invalid ``EMBREC`` value; :mod:`embrec.checks` reports it as a system check error."""

    id: str
    key: str
    message: str
    hint: str


#: Keys whose value is an integer of at least 1.
_POSITIVE_INTS = (
    "BATCH_SIZE",
    "MAX_ATTEMPTS",
    "SWEEP_AFTER",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "SEARCH_MAX_LENGTH",
    "USER_VECTOR_MAX_INTERACTIONS",
    "RERANK_POOL_FACTOR",
    "MAX_INTERACTION_BATCH",
)
#: Keys whose value is an integer within bounds (pgvector's limits for the HNSW ones).
_BOUNDED_INTS = {
    "HNSW_M": (2, 100),
    "HNSW_EF_CONSTRUCTION": (4, 1000),
    "EF_SEARCH": (1, 1000),
    "INDEX_BUILD_THRESHOLD": (0, None),
    "RERANK_POPULAR_CANDIDATES": (0, None),
}
#: Keys that may also be None.
_OPTIONAL = {
    "MAX_SCAN_TUPLES",
    "POPULARITY_PRIOR",
    "INDEX_BUILD_PARALLEL_WORKERS",
    "INDEX_BUILD_MAINTENANCE_WORK_MEM",
    "USER_VECTOR_HALF_LIFE_DAYS",
    "POPULARITY_WINDOW_DAYS",
    "API_PERMISSION_CLASSES",
    "API_THROTTLE_CLASSES",
}
_CHOICES = {
    "ITERATIVE_SCAN": ("relaxed_order", "strict_order", "off"),
    "USER_VECTOR_WEIGHTING": ("weighted", "uniform"),
}
#: A PostgreSQL memory size: digits and an optional unit (also keeps the value out of SQL).
_MEMORY = re.compile(r"^\d+\s*(kB|MB|GB|TB)?$")
#: DRF's rate syntax: "<requests>/<period>".
_RATE = re.compile(r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$")
THROTTLE_SCOPES = ("anon", "user", "search")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shape_problems(user: Any) -> list[SettingProblem]:
    """``embrec.E001``: ``settings.EMBREC`` is not a dict, or has keys embrec does not know."""
    if not isinstance(user, dict):
        return [
            SettingProblem(
                "embrec.E001", "", "settings.EMBREC must be a dict.", "EMBREC = {'ENCODERS': {...}}"
            )
        ]
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        return [
            SettingProblem(
                "embrec.E001",
                unknown[0],
                f"Unknown key(s) in settings.EMBREC: {', '.join(unknown)}.",
                f"Known keys: {', '.join(sorted(DEFAULTS))}.",
            )
        ]
    return []


def _checked_choice(name: str, value: Any) -> Any:
    """``value``, unless ``name`` is a setting with choices and ``value`` is none of them: a
    mistake that reaches the code (no system check ran, or ``override_settings``) must not be
    read as some other mode."""
    choices = _CHOICES.get(name)
    if choices is not None and value not in choices:
        raise ImproperlyConfigured(
            f"EMBREC[{name!r}] must be {' or '.join(repr(c) for c in choices)}, got {value!r}."
        )
    return value


def validate(user: Any = _MISSING) -> list[SettingProblem]:
    """Every problem with ``settings.EMBREC`` (or ``user``), checked key by key, encoder entries
    included: the one place settings are validated.

    Called by the system checks (``manage.py check``, ``runserver``, ``migrate``), so a bad value
    stops a deployment with an id and a hint instead of failing the first request that reads it.
    """
    problems: list[SettingProblem] = []

    def add(id: str, key: str, message: str, hint: str) -> None:
        problems.append(SettingProblem(id, key, message, hint))

    if user is _MISSING:
        user = getattr(settings, "EMBREC", {})
    user = user or {}
    problems.extend(_shape_problems(user))
    if not isinstance(user, dict):
        return problems
    values = {**copy.deepcopy(DEFAULTS), **user}
    for name in _MERGED:
        if isinstance(user.get(name), dict):
            values[name] = {**DEFAULTS[name], **user[name]}

    for key in _POSITIVE_INTS:
        value = values[key]
        if not _is_int(value) or value < 1:
            add(
                "embrec.E007",
                key,
                f"EMBREC[{key!r}] must be a positive integer, got {value!r}.",
                f"Set EMBREC[{key!r}] to an integer of at least 1 or remove it.",
            )
    queue = values["QUEUE"]
    if not isinstance(queue, str) or not queue:
        add(
            "embrec.E007",
            "QUEUE",
            f"EMBREC['QUEUE'] must be a non-empty queue name, got {queue!r}.",
            "Use the queue your encoding workers consume (-Q embrec).",
        )

    def wrong(key: str, expected: str) -> None:
        add(
            "embrec.E011",
            key,
            f"EMBREC[{key!r}] must be {expected}, got {values[key]!r}.",
            f"Fix EMBREC[{key!r}] or remove it to use the default ({DEFAULTS[key]!r}).",
        )

    for key, (low, high) in _BOUNDED_INTS.items():
        value = values[key]
        if not _is_int(value) or value < low or (high is not None and value > high):
            wrong(key, f"an integer from {low}" + (f" to {high}" if high is not None else " up"))
    for key, choices in _CHOICES.items():
        if values[key] not in choices:
            wrong(key, " or ".join(repr(c) for c in choices))
    m, ef_construction = values["HNSW_M"], values["HNSW_EF_CONSTRUCTION"]
    if _is_int(m) and _is_int(ef_construction) and ef_construction < 2 * m:
        # pgvector refuses such an index when it is built, long after the setting was read.
        wrong("HNSW_EF_CONSTRUCTION", f"at least 2 × EMBREC['HNSW_M'] ({2 * m}, pgvector's rule)")
    if _is_int(values["DEFAULT_LIMIT"]) and _is_int(values["MAX_LIMIT"]):
        if values["DEFAULT_LIMIT"] > values["MAX_LIMIT"]:
            wrong("DEFAULT_LIMIT", f"at most MAX_LIMIT ({values['MAX_LIMIT']})")
    if not isinstance(values["AUTO_KICK"], bool):
        wrong("AUTO_KICK", "True or False")
    if not isinstance(values["VERSION_AUTO_SWITCH"], bool):
        wrong("VERSION_AUTO_SWITCH", "True or False")
    value = values["VERSION_GRACE_PERIOD"]
    if not _is_number(value) or value < 0:
        wrong("VERSION_GRACE_PERIOD", "a number of seconds, 0 or more")
    preload = values["PRELOAD_ENCODERS"]
    encoders = values["ENCODERS"] if isinstance(values["ENCODERS"], dict) else {}
    if not isinstance(preload, list | tuple) or not all(
        isinstance(alias, str) and alias in encoders for alias in preload
    ):
        wrong("PRELOAD_ENCODERS", "a list of aliases from EMBREC['ENCODERS']")
    value = values["MAX_SCAN_TUPLES"]
    if value is not None and (not _is_int(value) or value < 1):
        wrong("MAX_SCAN_TUPLES", "None or a positive integer")
    value = values["INDEX_BUILD_PARALLEL_WORKERS"]
    if value is not None and (not _is_int(value) or value < 0):
        wrong("INDEX_BUILD_PARALLEL_WORKERS", "None or an integer of at least 0")
    value = values["INDEX_BUILD_MAINTENANCE_WORK_MEM"]
    if value is not None and not (isinstance(value, str) and _MEMORY.match(value)):
        wrong("INDEX_BUILD_MAINTENANCE_WORK_MEM", "None or a PostgreSQL size such as '1GB'")
    for key in ("USER_VECTOR_HALF_LIFE_DAYS", "POPULARITY_WINDOW_DAYS", "RECENCY_HALF_LIFE_DAYS"):
        value = values[key]
        optional = key in _OPTIONAL
        if (value is None and not optional) or (
            value is not None and (not _is_number(value) or value <= 0)
        ):
            wrong(key, ("None or " if optional else "") + "a positive number of days")
    value = values["POPULARITY_CACHE_SECONDS"]
    if not _is_number(value) or value < 0:
        wrong("POPULARITY_CACHE_SECONDS", "a number of seconds, 0 or more")
    value = values["KICK_TIMEOUT"]
    if not _is_number(value) or value <= 0:
        wrong("KICK_TIMEOUT", "a positive number of seconds")
    value = values["RECOMMEND_POPULARITY"]
    if not _is_number(value) or not 0 <= value <= 1:
        wrong("RECOMMEND_POPULARITY", "a number from 0 to 1")
    value = values["POPULARITY_PRIOR"]
    if value is not None and (not _is_number(value) or not 0 <= value <= 1):
        wrong("POPULARITY_PRIOR", "None or a quantile from 0 to 1")
    value = values["POPULARITY_PRIOR_STRENGTH"]
    if not _is_number(value) or value < 0:
        wrong("POPULARITY_PRIOR_STRENGTH", "a number of users, 0 or more")
    if values["TUNED_CONFIG"] is not None and not isinstance(
        values["TUNED_CONFIG"], str | PathLike
    ):
        wrong("TUNED_CONFIG", "None or the path of a JSON file (written by embrec_tune)")
    if values["EVALUATION_REPORT"] is not None and not isinstance(
        values["EVALUATION_REPORT"], str | PathLike
    ):
        wrong(
            "EVALUATION_REPORT",
            "None or the path of a JSON report (written by embrec_evaluate --json or embrec_tune)",
        )
    weights = values["INTERACTION_WEIGHTS"]
    if (
        not isinstance(weights, dict)
        or not weights
        or not all(isinstance(k, str) and k and _is_number(v) for k, v in weights.items())
    ):
        wrong("INTERACTION_WEIGHTS", "a non-empty dict of kind name -> finite number")

    for key, base in (
        ("API_PERMISSION_CLASSES", "rest_framework.permissions.BasePermission"),
        ("API_THROTTLE_CLASSES", "rest_framework.throttling.BaseThrottle"),
    ):
        problems.extend(_validate_classes(key, values[key], base))

    rates = values["THROTTLE_RATES"]
    if not isinstance(rates, dict):
        add(
            "embrec.E012",
            "THROTTLE_RATES",
            f"EMBREC['THROTTLE_RATES'] must be a dict, got {rates!r}.",
            "e.g. {'anon': '100/min', 'user': '1000/min', 'search': '30/min'}.",
        )
    else:
        for scope, rate in rates.items():
            if scope not in THROTTLE_SCOPES:
                add(
                    "embrec.E012",
                    "THROTTLE_RATES",
                    f"EMBREC['THROTTLE_RATES'] has an unknown scope {scope!r}.",
                    f"Known scopes: {', '.join(THROTTLE_SCOPES)}.",
                )
            elif rate is not None and not (isinstance(rate, str) and _RATE.match(rate)):
                add(
                    "embrec.E012",
                    "THROTTLE_RATES",
                    f"EMBREC['THROTTLE_RATES'][{scope!r}] is not a rate: {rate!r}.",
                    "Write '<requests>/<s|min|hour|day>', e.g. '30/min', or None for no limit.",
                )
    if not any(p.id == "embrec.E001" for p in problems):
        # Last: it imports the encoder classes and builds each one from its OPTIONS.
        problems.extend(_validate_encoders(values["ENCODERS"], values["DEFAULT_ENCODERS"]))
    return problems


def _validate_classes(key: str, paths: Any, base_path: str) -> list[SettingProblem]:
    if paths is None:
        return []
    hint = f"A list of dotted paths to {base_path.rsplit('.', 1)[1]} subclasses, or None."
    if isinstance(paths, str) or not isinstance(paths, (list, tuple)):
        return [SettingProblem("embrec.E013", key, f"EMBREC[{key!r}] must be a list.", hint)]
    base = import_string(base_path)
    problems = []
    for path in paths:
        try:
            cls = import_string(path) if isinstance(path, str) else path
        except ImportError as exc:
            problems.append(
                SettingProblem(
                    "embrec.E013",
                    key,
                    f"EMBREC[{key!r}]: {path!r} cannot be imported ({exc}).",
                    hint,
                )
            )
            continue
        if not (isinstance(cls, type) and issubclass(cls, base)):
            problems.append(
                SettingProblem(
                    "embrec.E013", key, f"EMBREC[{key!r}]: {path!r} is not a {base.__name__}.", hint
                )
            )
    return problems


def _is_encoder_entry(config: Any) -> bool:
    return isinstance(config, dict) and isinstance(config.get("CLASS"), str)


def encoder_class(alias: str, config: Any) -> tuple[type[BaseEncoder] | None, list[SettingProblem]]:
    """The encoder class of the entry ``EMBREC["ENCODERS"][alias]``, or ``None`` and why not: the
    entry is not a dict with a ``CLASS`` dotted path, or the class does not import or is not a
    :class:`~embrec.encoders.BaseEncoder` (``embrec.E003``). Used by :func:`validate` and by the
    encoder loader, so both report one problem the same way."""
    if not _is_encoder_entry(config):
        return None, [
            SettingProblem(
                "embrec.E003",
                "ENCODERS",
                f"EMBREC['ENCODERS'][{alias!r}] must be a dict with a 'CLASS' dotted path.",
                "e.g. {'CLASS': 'embrec.encoders.static.StaticWordEncoder'}.",
            )
        ]
    try:
        cls = import_string(config["CLASS"])
    except ImportError as exc:
        return None, [
            SettingProblem(
                "embrec.E003",
                "ENCODERS",
                f"Encoder {alias!r}: CLASS {config['CLASS']!r} cannot be imported ({exc}).",
                "Point 'CLASS' at an importable embrec.encoders.BaseEncoder subclass.",
            )
        ]
    # By path, like the DRF bases below: the encoders package loads encoders through this module.
    base = import_string("embrec.encoders.base.BaseEncoder")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return None, [
            SettingProblem(
                "embrec.E003",
                "ENCODERS",
                f"Encoder {alias!r}: CLASS {config['CLASS']!r} must be a BaseEncoder subclass.",
                "Subclass embrec.encoders.BaseEncoder.",
            )
        ]
    return cls, []


def _validate_encoders(encoders: Any, defaults: Any) -> list[SettingProblem]:
    """Problems with ``EMBREC["ENCODERS"]`` and ``["DEFAULT_ENCODERS"]``: classes that do not
    import or are not encoders, unknown entry keys, ``OPTIONS`` the class does not read
    (:attr:`~embrec.encoders.BaseEncoder.option_names`), bad index options
    (:func:`embrec.storage.index_options`) or options its constructor rejects."""
    problems: list[SettingProblem] = []
    if not isinstance(encoders, dict) or not encoders:
        return [
            SettingProblem(
                "embrec.E002",
                "ENCODERS",
                "EMBREC['ENCODERS'] must be a non-empty dict of alias -> "
                "{'CLASS': ..., 'OPTIONS': {...}}.",
                "See the EMBREC settings reference in docs/SETTINGS.md.",
            )
        ]
    for alias, config in encoders.items():
        where = f"EMBREC['ENCODERS'][{alias!r}]"
        if not _is_encoder_entry(config):
            problems.extend(encoder_class(alias, config)[1])
            continue
        extra = sorted(set(config) - {"CLASS", "OPTIONS"})
        if extra:
            problems.append(
                SettingProblem(
                    "embrec.E009",
                    "ENCODERS",
                    f"{where} has unknown key(s): {', '.join(map(str, extra))}.",
                    "An encoder entry has 'CLASS' and 'OPTIONS' only.",
                )
            )
        cls, found = encoder_class(alias, config)
        problems.extend(found)
        if cls is None:
            continue
        options = config.get("OPTIONS", {})
        if not isinstance(options, dict):
            problems.append(
                SettingProblem(
                    "embrec.E009",
                    "ENCODERS",
                    f"{where}['OPTIONS'] must be a dict.",
                    "Use {} for no options.",
                )
            )
            continue
        readable = cls.option_names
        # Every encoder accepts the options of its index (by path: storage imports this module).
        index_names = import_string("embrec.encoders.base.INDEX_OPTION_NAMES")
        unknown = sorted(set(options) - readable - index_names) if readable is not None else []
        if unknown:
            problems.append(
                SettingProblem(
                    "embrec.E009",
                    "ENCODERS",
                    f"{where}['OPTIONS'] has unknown option(s) for {cls.__name__}: "
                    f"{', '.join(map(str, unknown))}.",
                    f"{cls.__name__} reads: {', '.join(sorted(readable or ()))}.",
                )
            )
            continue
        try:
            import_string("embrec.storage.index_options")(options)
        except ImproperlyConfigured as exc:
            problems.append(
                SettingProblem(
                    "embrec.E009",
                    "ENCODERS",
                    f"{where}['OPTIONS'] has a bad index option: {exc}",
                    "See 'Index options' in docs/READ_PATH.md.",
                )
            )
            continue
        try:
            # Constructors validate their options and load nothing (models load on first use).
            cls(alias, **options)
        except (ImproperlyConfigured, TypeError, ValueError) as exc:
            problems.append(
                SettingProblem(
                    "embrec.E009",
                    "ENCODERS",
                    f"{where}['OPTIONS'] rejected by {cls.__name__}: {exc}",
                    f"See the docstring of {cls.__module__}.{cls.__name__}.",
                )
            )
    if not isinstance(defaults, (list, tuple)) or not defaults:
        problems.append(
            SettingProblem(
                "embrec.E006",
                "DEFAULT_ENCODERS",
                "EMBREC['DEFAULT_ENCODERS'] must be a non-empty list of encoder aliases.",
                "e.g. ['default'].",
            )
        )
    else:
        for alias in defaults:
            if alias not in encoders:
                problems.append(
                    SettingProblem(
                        "embrec.E006",
                        "DEFAULT_ENCODERS",
                        f"EMBREC['DEFAULT_ENCODERS'] names {alias!r}, which is not in "
                        "EMBREC['ENCODERS'].",
                        f"Add {alias!r} to EMBREC['ENCODERS'] or remove it from DEFAULT_ENCODERS.",
                    )
                )
    return problems
