"""Serializers of the embrec API: ranked results, explanations, interaction events, errors.

Host objects inside results are rendered by the serializer the registration names
(``Recommendable.serializer_class``, a class or dotted path), falling back to
:class:`DefaultObjectSerializer`.
"""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import import_string
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from embrec.conf import embrec_settings


def object_serializer_for(rec) -> type[serializers.BaseSerializer]:
    """The serializer class a registration names (dotted path or class), or the default."""
    cls = rec.serializer_class
    if isinstance(cls, str):
        cls = import_string(cls)
    return cls or DefaultObjectSerializer


class DefaultObjectSerializer(serializers.Serializer):
    """Fallback rendering of a host object: its type, pk and ``str()``."""

    type = serializers.SerializerMethodField()
    pk = serializers.SerializerMethodField()
    label = serializers.SerializerMethodField()

    def get_type(self, obj) -> str:
        return obj._meta.label_lower

    def get_pk(self, obj) -> str:
        return str(obj.pk)

    def get_label(self, obj) -> str:
        return str(obj)


class ExplanationSerializer(serializers.Serializer):
    """An item the user interacted with that made a personal result rank high."""

    pk = serializers.CharField(help_text="Primary key of the interacted item.")
    label = serializers.SerializerMethodField(help_text="str() of the interacted item.")
    kind = serializers.CharField(help_text="Strongest interaction kind on that item.")
    weight = serializers.FloatField(help_text="Its time-decayed weight in the user vector.")
    contribution = serializers.FloatField(
        help_text="weight × cosine similarity between that item and the result."
    )

    def get_label(self, explanation) -> str:
        return str(explanation.object)


class ResultSerializer(serializers.Serializer):
    """One ranked result."""

    pk = serializers.CharField(help_text="Primary key of the recommended object.")
    score = serializers.FloatField(help_text="Final ranking score (higher is better).")
    similarity = serializers.FloatField(
        allow_null=True, help_text="Cosine similarity to the query; null for popularity results."
    )
    source = serializers.ChoiceField(
        choices=["similar", "personal", "search", "popular", "recent"],
        help_text="Where the result came from.",
    )
    object = serializers.SerializerMethodField(
        help_text="The object, rendered by the registration's serializer."
    )
    explanation = ExplanationSerializer(
        many=True,
        allow_null=True,
        required=False,
        help_text="Personal results: the interacted items that contributed most.",
    )

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_object(self, result) -> dict[str, Any]:
        # One object serializer for the whole list, as DRF's ``many=True`` does: building a
        # ModelSerializer's fields costs ~0.5 ms, a third of a similar-items response when it
        # was done once per result.
        serializer = self.context.get("_embrec_object_serializer")
        if serializer is None:
            serializer_class = self.context.get("object_serializer") or DefaultObjectSerializer
            serializer = serializer_class(context=self.context)
            self.context["_embrec_object_serializer"] = serializer
        return serializer.to_representation(result.object)


class ResultListSerializer(serializers.Serializer):
    """A ranked list (never paginated; ``limit`` caps it)."""

    type = serializers.CharField(help_text="Registered model label (app_label.model_name).")
    limit = serializers.IntegerField()
    results = ResultSerializer(many=True)


class RegisteredTypeField(serializers.CharField):
    """A registered model label; unknown labels are answered with 404 ``unknown_type`` by the
    view. Documented as an enum of the labels registered when the schema is generated."""


class InteractionKindField(serializers.CharField):
    """A kind from ``EMBREC["INTERACTION_WEIGHTS"]`` (documented as an enum of the configured
    kinds; checked by :meth:`InteractionEventSerializer.validate_kind`)."""


class InteractionEventSerializer(serializers.Serializer):
    """One event of the current user on one object."""

    type = RegisteredTypeField(help_text="Registered model label (app_label.model_name).")
    pk = serializers.CharField(help_text="Primary key of the object.")
    kind = InteractionKindField(help_text="A configured interaction kind.")
    at = serializers.DateTimeField(
        required=False, help_text="When it happened (default: now); not in the future."
    )

    def validate_kind(self, value: str) -> str:
        weights = embrec_settings.INTERACTION_WEIGHTS
        if value not in weights:
            raise serializers.ValidationError(
                f"Unknown kind {value!r} (configured kinds: {', '.join(sorted(weights))}).",
                code="unknown_kind",
            )
        return value


class InteractionBatchSerializer(serializers.Serializer):
    """Several events at once (at most ``EMBREC['MAX_INTERACTION_BATCH']``)."""

    events = InteractionEventSerializer(many=True)

    def validate_events(self, value: list) -> list:
        maximum = int(embrec_settings.MAX_INTERACTION_BATCH)
        if not value:
            raise serializers.ValidationError("Send at least one event.", code="empty")
        if len(value) > maximum:
            raise serializers.ValidationError(
                f"At most {maximum} events per request, got {len(value)}.",
                code="batch_too_large",
            )
        return value


class InteractionResultSerializer(serializers.Serializer):
    """What a POST to the interactions endpoint stored."""

    recorded = serializers.IntegerField(help_text="Number of events stored.")


class ErrorSerializer(serializers.Serializer):
    """Every error body: a message and a machine-readable code, plus details where useful."""

    detail = serializers.CharField()
    code = serializers.CharField()
    field = serializers.CharField(required=False, help_text="The parameter at fault.")
    state = serializers.CharField(
        required=False, help_text="not_embedded errors: pending, failed or missing."
    )
    errors = serializers.JSONField(required=False, help_text="Per-field validation errors.")
