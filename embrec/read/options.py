"""The options of one read query, validated once into a :class:`QueryOptions`.

Two ways in, one set of validators:

* the Python API (:func:`embrec.similar` …) calls :meth:`QueryOptions.build` with its keyword
  arguments;
* the REST API validates query parameters with the serializers of :mod:`embrec.api.params`,
  whose fields call the same ``clean_*`` functions and which assemble the same object.

Everything after that (scope, retrieval, re-ranking) trusts the object and checks nothing again.
Bad input raises :class:`~embrec.exceptions.QueryError` with a ``code`` and the ``field`` at
fault; nothing unvalidated reaches SQL, and filter values are always bound parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connections, models, router
from django.db.models import Q

from embrec.conf import embrec_settings
from embrec.exceptions import QueryError
from embrec.items import Recommendable

#: Lookups a filter may use, on fields listed in ``Recommendable.filter_fields``.
FILTER_LOOKUPS = ("exact", "iexact", "in", "gt", "gte", "lt", "lte", "isnull")

_TEXT_FIELDS = (models.CharField, models.TextField)


@dataclass(frozen=True)
class QueryOptions:
    """What the caller asked of one read query, validated.

    ``filters`` is the validated condition on the registration's ``filter_fields`` (an empty
    ``Q`` for none). ``mmr_lambda`` is ``None`` for no diversity re-ranking; ``popularity`` and
    ``recency`` are shares of the score with ``popularity + recency <= 1``. ``text`` is the
    search text (searches only); ``explain`` applies to personal recommendations, ``encoder`` is
    the requested alias (``None``: the registration's choice for the query kind).
    """

    limit: int
    filters: Q = field(default_factory=Q)
    mmr_lambda: float | None = None
    popularity: float = 0.0
    recency: float = 0.0
    exclude_seen: bool = False
    explain: bool = True
    ef_search: int | None = None
    encoder: str | None = None
    text: str | None = None

    @property
    def reranks(self) -> bool:
        """Whether the nearest vectors are re-ranked (diversity or a popularity/recency blend)."""
        return self.mmr_lambda is not None or bool(self.popularity) or bool(self.recency)

    @classmethod
    def build(
        cls,
        rec: Recommendable,
        *,
        limit: Any = None,
        filters: Mapping[str, Any] | None = None,
        mmr_lambda: Any = None,
        popularity: Any = 0.0,
        recency: Any = 0.0,
        exclude_seen: Any = False,
        explain: Any = True,
        ef_search: Any = None,
        encoder: str | None = None,
        text: Any = None,
    ) -> QueryOptions:
        """Validate raw options (user input, usually text) for a query on ``rec``.

        ``text`` is validated when not ``None`` (searches pass it). Raises
        :class:`~embrec.exceptions.QueryError`.
        """
        cleaned_text = clean_text(text) if text is not None else None
        cleaned_limit = clean_limit(limit)
        mmr_value, pop, rec_share = clean_ranking(mmr_lambda, popularity, recency)
        return cls(
            limit=cleaned_limit,
            filters=parse_filters(rec, filters),
            mmr_lambda=mmr_value,
            popularity=pop,
            recency=rec_share,
            exclude_seen=clean_flag(exclude_seen, "exclude_seen"),
            explain=clean_flag(explain, "explain"),
            ef_search=clean_ef_search(ef_search),
            encoder=encoder,
            text=cleaned_text,
        )


# --------------------------------------------------------------------------- validators


def clean_limit(limit: Any) -> int:
    """``limit`` as an int in ``1..EMBREC["MAX_LIMIT"]``; ``None`` gives ``DEFAULT_LIMIT``."""
    maximum = int(embrec_settings.MAX_LIMIT)
    if limit is None or limit == "":
        return min(int(embrec_settings.DEFAULT_LIMIT), maximum)
    if isinstance(limit, bool):
        raise QueryError("limit must be an integer.", code="invalid_limit", field="limit")
    try:
        value = int(limit) if not isinstance(limit, float) or limit.is_integer() else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        raise QueryError(
            f"limit must be an integer, got {limit!r}.", code="invalid_limit", field="limit"
        )
    if value <= 0 or value > maximum:
        raise QueryError(
            f"limit must be between 1 and {maximum}, got {value}.",
            code="invalid_limit",
            field="limit",
        )
    return value


def clean_fraction(value: Any, name: str, *, allow_none: bool = False) -> float | None:
    """A float in ``[0, 1]`` (``mmr_lambda``, ``popularity``, ``recency``); blank is ``None``
    with ``allow_none``, else 0."""
    if value is None or value == "":
        return None if allow_none else 0.0
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (0.0 <= number <= 1.0):
        raise QueryError(f"{name} must be a number between 0 and 1, got {value!r}.", field=name)
    return number


def check_shares(popularity: float, recency: float) -> None:
    """The blend's shares leave room for the similarity: ``popularity + recency <= 1``."""
    if popularity + recency > 1.0:
        raise QueryError(
            "popularity + recency must not exceed 1 (the rest is the similarity's share).",
            field="popularity",
        )


def clean_ranking(
    mmr_lambda: Any, popularity: Any, recency: Any
) -> tuple[float | None, float, float]:
    """Validate the re-ranking options: each in ``[0, 1]``, ``popularity + recency <= 1``."""
    mmr_value = clean_fraction(mmr_lambda, "mmr_lambda", allow_none=True)
    pop = clean_fraction(popularity, "popularity") or 0.0
    rec = clean_fraction(recency, "recency") or 0.0
    check_shares(pop, rec)
    return mmr_value, pop, rec


def clean_text(text: Any) -> str:
    """Search text: non-blank and at most ``EMBREC["SEARCH_MAX_LENGTH"]`` characters."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("The search text must not be empty.", code="empty_query", field="q")
    maximum = int(embrec_settings.SEARCH_MAX_LENGTH)
    if len(text) > maximum:
        raise QueryError(
            f"The search text is longer than {maximum} characters ({len(text)}).",
            code="query_too_long",
            field="q",
        )
    return text.strip()


def clean_flag(value: Any, name: str) -> bool:
    """A boolean option: a bool, or ``1/true/yes/on`` and ``0/false/no/off`` in any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise QueryError(f"{name} must be true or false, got {value!r}.", field=name)


def clean_ef_search(value: Any) -> int | None:
    """``ef_search`` (candidates the HNSW scan keeps): a positive integer, or ``None`` for
    ``EMBREC["EF_SEARCH"]``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise QueryError(f"ef_search must be a positive integer, got {value!r}.", field="ef_search")
    return value


def parse_filters(rec: Recommendable, filters: Mapping[str, Any] | None) -> Q:
    """Validate ``{"field__lookup": value}`` against ``rec.filter_fields`` and return a ``Q``.

    Only fields the registration declares are accepted, with the lookups in
    :data:`FILTER_LOOKUPS`; values are converted by the model field (``"12.5"`` for a decimal),
    ``in`` takes a list or a comma-separated string. Anything else raises
    :class:`~embrec.exceptions.QueryError`.
    """
    q = Q()
    if not filters:
        return q
    allowed = list(rec.filter_fields)
    # Longest first: "category__slug__in" is the path "category__slug" with the lookup "in".
    by_length = sorted(allowed, key=len, reverse=True)
    for key, raw in filters.items():
        name = next((n for n in by_length if str(key) == n or str(key).startswith(f"{n}__")), None)
        lookup = str(key)[len(name) + 2 :] if name else ""
        lookup = lookup or "exact"
        if name is None:
            known = ", ".join(allowed) or "none"
            raise QueryError(
                f"Unknown filter {key!r} for {rec.label} (filterable fields: {known}).",
                code="unknown_filter",
                field=str(key),
            )
        if lookup not in FILTER_LOOKUPS:
            raise QueryError(
                f"Unsupported lookup {lookup!r} in filter {key!r} "
                f"(supported: {', '.join(FILTER_LOOKUPS)}).",
                code="unknown_filter",
                field=str(key),
            )
        model_field = rec.get_filter_field(name)
        if lookup == "iexact" and not isinstance(_target(model_field), _TEXT_FIELDS):
            # Case does not apply to numbers or dates; PostgreSQL has no UPPER() for them.
            lookup = "exact"
        try:
            if lookup == "isnull":
                value: Any = clean_flag(raw, str(key))
            elif lookup == "in":
                items = raw.split(",") if isinstance(raw, str) else list(raw)
                value = [_convert(model_field, item) for item in items]
            else:
                value = _convert(model_field, raw)
        except (ValidationError, TypeError, ValueError) as exc:
            message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            raise QueryError(
                f"Invalid value {raw!r} for filter {key!r}: {message}",
                code="invalid_filter",
                field=str(key),
            ) from None
        q &= Q(**{f"{name}__{lookup}": value})
    return q


def _target(model_field: models.Field) -> models.Field:
    """The field whose column holds the value (a foreign key's target)."""
    if getattr(model_field, "remote_field", None) is not None:
        return model_field.target_field
    return model_field


def _convert(model_field: models.Field, value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
    return clean_value(model_field, value)


def clean_value(model_field: models.Field, value: Any, *, using: str | None = None) -> Any:
    """``value`` (user input, usually text) as a Python value that ``model_field``'s database
    column can hold, or :class:`~django.core.exceptions.ValidationError`.

    The field's own ``to_python`` converts; then what the database would reject or Django would
    compile to "no rows" is refused here, so no user input turns into a database error: integers
    outside the column's range (``integer_field_range`` of the connection), decimals that are
    not finite or have more whole digits than the column, and text with NUL characters.
    """
    model_field = _target(model_field)
    if isinstance(value, str) and "\x00" in value:
        raise ValidationError("NUL characters are not allowed")
    converted = model_field.to_python(value)
    if converted is None:
        if not model_field.null:
            raise ValidationError("a value is required")
        return None
    if isinstance(converted, str) and "\x00" in converted:
        raise ValidationError("NUL characters are not allowed")
    connection = connections[using or router.db_for_read(model_field.model)]
    internal = model_field.get_internal_type()
    if isinstance(converted, int) and not isinstance(converted, bool):
        try:
            low, high = connection.ops.integer_field_range(internal)
        except KeyError:  # not an integer column
            low = high = None
        if (low is not None and converted < low) or (high is not None and converted > high):
            raise ValidationError(f"out of range for this field ({low}..{high})")
    if isinstance(converted, Decimal):
        if not converted.is_finite():
            raise ValidationError("must be a finite number")
        max_digits = getattr(model_field, "max_digits", None)
        places = getattr(model_field, "decimal_places", None) or 0
        if max_digits is not None and converted.adjusted() + 1 > max_digits - places:
            limit = Decimal(10) ** (max_digits - places)
            raise ValidationError(f"out of range for this field (|value| < {limit})")
    return converted
