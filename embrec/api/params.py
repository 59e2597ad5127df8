"""Query parameters of the read endpoints, validated once into a
:class:`~embrec.read.options.QueryOptions`.

One serializer per endpoint declares the parameters it takes (``limit``, the re-ranking options,
``exclude_seen``, ``q``, ``explain``); every other parameter, except those the view reads itself
(:data:`RESERVED_PARAMS`), is a filter on the registration's ``filter_fields``. The fields
validate with the same functions as the Python API (:mod:`embrec.read.options`), so both give
the same messages and codes. :meth:`ReadParams.parse` answers the first error as a
:class:`~embrec.exceptions.QueryError` (``{"detail", "code", "field"}``, status 400).

The OpenAPI parameters of the endpoints are derived from these fields
(:func:`embrec.api.schema.read_parameters`): each field describes its own schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from embrec.conf import embrec_settings
from embrec.exceptions import QueryError
from embrec.items import Recommendable
from embrec.read.options import (
    QueryOptions,
    check_shares,
    clean_flag,
    clean_fraction,
    clean_limit,
    clean_text,
    parse_filters,
)

#: Query parameters that are never filters (those an endpoint does not take are ignored).
RESERVED_PARAMS = frozenset(
    {
        "limit",
        "q",
        "type",
        "user",
        "mmr_lambda",
        "popularity",
        "recency",
        "exclude_seen",
        "explain",
        "format",
    }
)


def _invalid(exc: QueryError, key: str | None = None) -> serializers.ValidationError:
    detail = ErrorDetail(str(exc), code=exc.code)
    if key is None:
        return serializers.ValidationError(detail)
    return serializers.ValidationError({key: [detail]})


class ParamField(serializers.Field):
    """A query parameter checked by one of :mod:`embrec.read.options`' validators.

    A missing or blank parameter takes the validator's value for "absent" (``absent``, passed
    through the validator), so defaults live in one place too.
    """

    def __init__(self, *, absent: Any = None, **kwargs: Any):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.absent = absent

    def clean(self, value: Any) -> Any:
        """The validated value; raises :class:`~embrec.exceptions.QueryError`."""
        raise NotImplementedError

    def openapi_schema(self) -> dict[str, Any]:
        """The parameter's OpenAPI schema."""
        raise NotImplementedError

    def absent_value(self) -> Any:
        return self.absent() if callable(self.absent) else self.absent

    def get_default(self) -> Any:
        try:
            return self.clean(self.absent_value())
        except QueryError as exc:
            raise _invalid(exc) from None

    def to_internal_value(self, data: Any) -> Any:
        try:
            return self.clean(data)
        except QueryError as exc:
            raise _invalid(exc) from None

    def to_representation(self, value: Any) -> Any:
        return value


class LimitField(ParamField):
    """``limit``: ``1..EMBREC["MAX_LIMIT"]``, default ``DEFAULT_LIMIT``."""

    def clean(self, value: Any) -> int:
        return clean_limit(value)

    def openapi_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "maximum": int(embrec_settings.MAX_LIMIT)}

    @property
    def description(self) -> str:
        return f"Number of results, 1..{int(embrec_settings.MAX_LIMIT)}."


class FractionField(ParamField):
    """A number in ``[0, 1]``; with ``allow_none``, absent means ``None`` (off)."""

    def __init__(self, *, allow_none: bool = False, **kwargs: Any):
        kwargs.setdefault("absent", None if allow_none else 0.0)
        super().__init__(**kwargs)
        self.allow_none_value = allow_none

    def clean(self, value: Any) -> float | None:
        return clean_fraction(value, self.field_name, allow_none=self.allow_none_value)

    def openapi_schema(self) -> dict[str, Any]:
        return {"type": "number", "minimum": 0, "maximum": 1}


class FlagField(ParamField):
    """A boolean: ``true/false``, ``1/0``, ``yes/no``, ``on/off``."""

    def clean(self, value: Any) -> bool:
        if value is None or value == "":
            return bool(self.absent_value())
        return clean_flag(value, self.field_name)

    def openapi_schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


class SearchTextField(ParamField):
    """``q``: not blank, at most ``EMBREC["SEARCH_MAX_LENGTH"]`` characters."""

    #: Documented as required (a missing ``q`` is answered with 400 ``empty_query``).
    documented_required = True

    def clean(self, value: Any) -> str:
        return clean_text(value)

    def openapi_schema(self) -> dict[str, Any]:
        maximum = int(embrec_settings.SEARCH_MAX_LENGTH)
        return {"type": "string", "minLength": 1, "maxLength": maximum}

    @property
    def description(self) -> str:
        maximum = int(embrec_settings.SEARCH_MAX_LENGTH)
        return f"Text to search for, 1..{maximum} characters, not blank."


class ReadParams(serializers.Serializer):
    """Base of the read endpoints' parameters: declared fields plus filters.

    ``context["rec"]`` is the registration the filters are checked against. The validated data
    is a :class:`QueryOptions`.
    """

    @classmethod
    def parse(
        cls, query_params: Mapping[str, Any], rec: Recommendable, **context: Any
    ) -> QueryOptions:
        """Validate ``query_params`` (a ``QueryDict``) for a query on ``rec``; raises
        :class:`~embrec.exceptions.QueryError` with the first problem."""
        params = cls(data=query_params, context={"rec": rec, **context})
        if not params.is_valid():
            key, details = next(iter(params.errors.items()))
            detail = details[0] if isinstance(details, list) else details
            raise QueryError(str(detail), code=getattr(detail, "code", "invalid"), field=key)
        return params.validated_data

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        values = super().to_internal_value(data)
        values["filters"] = self._filters(data)
        return values

    def _filters(self, data: Any) -> Any:
        rec = self.context["rec"]
        filters: dict[str, Any] = {}
        for key in data:
            if key in RESERVED_PARAMS:
                continue
            values = data.getlist(key) if hasattr(data, "getlist") else [data[key]]
            if len(values) > 1:
                raise serializers.ValidationError(
                    {
                        key: [
                            ErrorDetail(
                                f"Filter {key!r} given more than once; use "
                                f"{key.split('__')[0]}__in=a,b.",
                                code="invalid_filter",
                            )
                        ]
                    }
                )
            filters[key] = values[0]
        try:
            return parse_filters(rec, filters)
        except QueryError as exc:
            raise _invalid(exc, exc.field or "filters") from None

    def validate(self, attrs: dict[str, Any]) -> QueryOptions:
        try:
            check_shares(attrs.get("popularity") or 0.0, attrs.get("recency") or 0.0)
        except QueryError as exc:
            raise _invalid(exc, exc.field) from None
        return QueryOptions(**attrs)


def _popularity_default() -> float:
    return embrec_settings.RECOMMEND_POPULARITY


class PopularParams(ReadParams):
    """``items/<type>/popular/``."""

    limit = LimitField()
    exclude_seen = FlagField(
        absent=False,
        help_text="Leave out items the user interacted with (disliked items always are).",
    )


class RankedParams(PopularParams):
    """Ranked lists: ``limit``, the re-ranking options and ``exclude_seen``."""

    mmr_lambda = FractionField(
        allow_none=True,
        help_text="Diversity re-ranking (maximal marginal relevance): 1 keeps the relevance "
        "order, lower values favour variety. Left out: no re-ranking.",
    )
    popularity = FractionField(
        help_text="Share of popularity in the score (default 0). popularity + recency ≤ 1."
    )
    recency = FractionField(help_text="Share of recency in the score. popularity + recency ≤ 1.")


class SimilarParams(RankedParams):
    """``items/<type>/<pk>/similar/``."""


class SearchParams(RankedParams):
    """``search/``: the ranked-list parameters and ``q``."""

    q = SearchTextField(source="text")


class RecommendationParams(RankedParams):
    """``recommendations/``: ``exclude_seen`` defaults to true, ``popularity`` to
    ``EMBREC["RECOMMEND_POPULARITY"]``; ``explain`` (default true)."""

    exclude_seen = FlagField(
        absent=True,
        help_text="Leave out items the user interacted with (default true; disliked items "
        "always are).",
    )
    popularity = FractionField(
        absent=_popularity_default,
        help_text="Share of popularity in the score (default EMBREC['RECOMMEND_POPULARITY']). "
        "popularity + recency ≤ 1.",
    )
    explain = FlagField(absent=True, help_text="Include explanations (default true).")
