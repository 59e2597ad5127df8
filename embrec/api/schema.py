"""OpenAPI description of the embrec API (drf-spectacular), built from the live configuration.

The parameters of each endpoint are computed when the schema is generated, not when this module
is imported. The query parameters of the read endpoints are derived from their parameter
serializers (:mod:`embrec.api.params`, the same fields that validate them): ``limit`` has the
real bounds (``1..EMBREC["MAX_LIMIT"]``), ``q`` the real length limit. ``type`` lists the
registered model labels, and every registration's ``filter_fields`` appear as parameters with
the lookups they accept and a type derived from the model field (integer bounds from the
database column).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from django.db import connections, models, router
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError

from embrec.api.params import ReadParams
from embrec.conf import embrec_settings
from embrec.read.options import FILTER_LOOKUPS
from embrec.registry import registry

_INTEGER_FIELDS = (models.IntegerField, models.AutoField)


def _labels() -> list[str]:
    return sorted(rec.label for rec in registry.all())


class RegisteredTypeFieldExtension(OpenApiSerializerFieldExtension):
    """``type`` in request bodies: an enum of the registered labels, like the parameter."""

    target_class = "embrec.api.serializers.RegisteredTypeField"

    def map_serializer_field(self, auto_schema, direction):
        schema: dict[str, Any] = {"type": "string"}
        if _labels():
            schema["enum"] = _labels()
        return schema


class InteractionKindFieldExtension(OpenApiSerializerFieldExtension):
    """``kind`` in request bodies: an enum of the configured interaction kinds."""

    target_class = "embrec.api.serializers.InteractionKindField"

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "string", "enum": sorted(embrec_settings.INTERACTION_WEIGHTS)}


def type_parameter(location: Literal["query", "path"]) -> OpenApiParameter:
    """``type``: one of the registered model labels."""
    in_path = location == OpenApiParameter.PATH
    return OpenApiParameter(
        "type",
        str,
        location,
        enum=_labels() or None,
        description="Registered model label (app_label.model_name)."
        + ("" if in_path else " May be left out when only one model is registered."),
    )


def read_parameters(params_class: type[ReadParams]) -> list[OpenApiParameter]:
    """The query parameters of a read endpoint, derived from its parameter serializer: one per
    declared field (schema, default and description from the field), then the filters."""
    parameters = []
    for name, field in params_class().fields.items():
        try:
            default = field.get_default()
        except ValidationError:  # no usable default (``q``)
            default = None
        parameters.append(
            OpenApiParameter(
                name,
                field.openapi_schema(),
                required=getattr(field, "documented_required", False),
                default=default,
                description=getattr(field, "description", None) or str(field.help_text or ""),
            )
        )
    return parameters + filter_parameters()


def filter_value_schema(field: models.Field, lookup: str) -> dict[str, Any]:
    """The OpenAPI schema of a filter value on ``field`` with ``lookup``."""
    if lookup == "isnull":
        return {"type": "boolean"}
    if lookup == "in":
        return {"type": "string", "description": "comma-separated values"}
    if getattr(field, "remote_field", None) is not None:
        field = field.target_field
    if isinstance(field, models.BooleanField):
        return {"type": "boolean"}
    if isinstance(field, _INTEGER_FIELDS):
        connection = connections[router.db_for_read(field.model)]
        try:
            low, high = connection.ops.integer_field_range(field.get_internal_type())
        except KeyError:
            low = high = None
        schema: dict[str, Any] = {"type": "integer"}
        if low is not None:
            schema["minimum"] = low
        if high is not None:
            schema["maximum"] = high
        return schema
    if isinstance(field, (models.FloatField, models.DecimalField)):
        return {"type": "number"}
    if isinstance(field, models.DateTimeField):
        return {"type": "string", "format": "date-time"}
    if isinstance(field, models.DateField):
        return {"type": "string", "format": "date"}
    return {"type": "string"}


def filter_parameters() -> list[OpenApiParameter]:
    """One parameter per registered filter field and lookup (``year``, ``year__gte``, …)."""
    parameters: dict[str, OpenApiParameter] = {}
    for rec in sorted(registry.all(), key=lambda r: r.label):
        for name in rec.filter_fields:
            field = rec.get_filter_field(name)
            for lookup in FILTER_LOOKUPS:
                key = name if lookup == "exact" else f"{name}__{lookup}"
                if key in parameters:
                    continue
                parameters[key] = OpenApiParameter(
                    key,
                    filter_value_schema(field, lookup),
                    description=f"Filter ({lookup}) on {rec.label}.{name}; other types reject "
                    "it with 400 unknown_filter.",
                )
    return list(parameters.values())


RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    {"type": "integer", "minimum": 0},
    OpenApiParameter.HEADER,
    response=[429, 503],
    description="Seconds to wait before retrying.",
)


class EmbrecAutoSchema(AutoSchema):
    """drf-spectacular's ``AutoSchema`` plus the parameters a view lists in
    ``schema_parameters`` (callables returning one :class:`OpenApiParameter` or a list), those
    of its ``params_class`` (:func:`read_parameters`), and the ``Retry-After`` header of 429 and
    503 responses."""

    def get_override_parameters(self):
        parameters = [*super().get_override_parameters(), RETRY_AFTER]
        builders: tuple[Callable[[], Any], ...] = getattr(self.view, "schema_parameters", ())
        for build in builders:
            built = build()
            parameters.extend(built if isinstance(built, list) else [built])
        params_class = getattr(self.view, "params_class", None)
        if params_class is not None:
            parameters.extend(read_parameters(params_class))
        return parameters
