"""DRF views of the embrec API."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.utils.module_loading import import_string
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from embrec import queries
from embrec.api.serializers import ResultSerializer
from embrec.registry import NotRegistered, registry


def object_serializer_for(rec):
    cls = rec.serializer_class
    if isinstance(cls, str):
        cls = import_string(cls)
    return cls


class SimilarItemsView(APIView):
    """``GET items/<type>/<pk>/similar/?limit=N`` — nearest neighbours of one object."""

    def get(self, request, type: str, pk: str):
        try:
            rec = registry.get(type)
        except NotRegistered:
            return Response({"detail": f"Unknown type {type!r}."}, status=status.HTTP_404_NOT_FOUND)
        try:
            obj = rec.get_visible_queryset(request).get(pk=rec.pk_from_string(pk))
        except (rec.model.DoesNotExist, ValueError, TypeError, ValidationError):
            return Response({"detail": f"No {type} with pk {pk!r}."}, status=404)
        try:
            limit = request.query_params.get("limit")
            results = queries.similar(obj, limit=limit and int(limit), request=request)
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        except queries.NotEmbedded as exc:
            return Response(
                {"detail": str(exc), "status": "not_embedded"},
                status=status.HTTP_409_CONFLICT,
            )
        context = {"request": request, "object_serializer": object_serializer_for(rec)}
        return Response({"results": ResultSerializer(results, many=True, context=context).data})
