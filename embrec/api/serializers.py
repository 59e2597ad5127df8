"""Serializers of the embrec API."""

from __future__ import annotations

from rest_framework import serializers


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


class ResultSerializer(serializers.Serializer):
    """One ranked result."""

    score = serializers.FloatField()
    source = serializers.CharField()
    object = serializers.SerializerMethodField()

    def get_object(self, result) -> dict:
        serializer_class = self.context.get("object_serializer") or DefaultObjectSerializer
        return serializer_class(result.object, context=self.context).data
