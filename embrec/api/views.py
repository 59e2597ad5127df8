"""DRF views of the embrec API.

All views share :class:`EmbrecAPIView`: permission and throttle classes come from
``EMBREC["API_PERMISSION_CLASSES"]`` / ``EMBREC["API_THROTTLE_CLASSES"]`` (by default no extra
permission, and embrec's anonymous and per-user throttles; DRF's defaults when ``None``),
personal endpoints add ``IsAuthenticated``, search adds its own throttle, and every error has the
body ``{"detail": "...", "code": "..."}`` (see :func:`exception_handler`): no input gives a 500
(bodies that do not parse are a 400, values the database cannot hold a 400 or 404), and an
unreachable database gives a 503 with ``Retry-After``.

Query parameters common to the ranked lists: ``limit``; ``mmr_lambda`` (0–1, diversity
re-ranking); ``popularity`` and ``recency`` (0–1, score shares); ``exclude_seen``; any other
parameter is a filter on the registration's ``filter_fields`` (``category=scifi``,
``price__gte=10``, ``year__in=1994,1995``); unknown names are rejected with 400.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError, transaction
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from embrec.api import schema as openapi
from embrec.api.params import (
    PopularParams,
    ReadParams,
    RecommendationParams,
    SearchParams,
    SimilarParams,
)
from embrec.api.schema import EmbrecAutoSchema
from embrec.api.serializers import (
    ErrorSerializer,
    InteractionBatchSerializer,
    InteractionEventSerializer,
    InteractionResultSerializer,
    ResultListSerializer,
    ResultSerializer,
    object_serializer_for,
)
from embrec.api.throttling import SearchRateThrottle
from embrec.conf import embrec_settings
from embrec.encoders.base import EncoderUnavailable
from embrec.exceptions import EmbrecError
from embrec.interactions import Event, record_interactions
from embrec.read import pipeline
from embrec.read.options import QueryOptions, clean_value
from embrec.read.results import Result
from embrec.read.scope import Scope, get_registration
from embrec.registry import registry

logger = logging.getLogger("embrec")

#: Permission to see another user's recommendations (and, in their explanations, history).
VIEW_USER_RECOMMENDATIONS = "embrec.view_user_recommendations"

# --------------------------------------------------------------------------- errors


class EmbrecAPIError(exceptions.APIException):
    """An API error with a status, a message, a code and optional extra body fields."""

    def __init__(self, detail: str, *, code: str, status_code: int = 400, **extra: Any):
        super().__init__(detail, code)
        self.status_code = status_code
        self.extra = {k: v for k, v in extra.items() if v is not None}


class ServiceUnavailable(exceptions.APIException):
    """The database (or a remote embedding service) cannot be reached: a 503 with
    ``Retry-After``, never a 500 page."""

    status_code = 503
    default_detail = "The service is temporarily unavailable; try again shortly."
    default_code = "unavailable"
    #: Seconds a client should wait before retrying (the ``Retry-After`` header).
    retry_after = 5


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, (OperationalError, InterfaceError)):
        # Connection refused, server restarting, connection lost mid-request: transient.
        logger.warning("embrec API: database unavailable (%s).", exc)
        return ServiceUnavailable()
    if isinstance(exc, EncoderUnavailable):
        # A remote embedding service is down or rate limited beyond the encoder's retries.
        logger.warning("embrec API: encoder unavailable (%s).", exc)
        return ServiceUnavailable()
    if isinstance(exc, EmbrecError):
        return EmbrecAPIError(
            str(exc), code=exc.code, status_code=exc.status, field=exc.field, **exc.details()
        )
    if isinstance(exc, Http404):
        return exceptions.NotFound(str(exc) or None)
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(str(exc) or None)
    return exc


def _first_message(detail: Any) -> tuple[str, str]:
    if isinstance(detail, dict):
        for key, value in detail.items():
            message, code = _first_message(value)
            return (f"{key}: {message}" if key != "non_field_errors" else message), code
    if isinstance(detail, list):
        for value in detail:
            if value:
                return _first_message(value)
    return str(detail), getattr(detail, "code", "invalid") or "invalid"


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, with embrec's exceptions mapped and one body shape for every error::

        {"detail": "limit must be between 1 and 100, got 500.", "code": "invalid_limit",
         "field": "limit"}

    Validation errors of request bodies keep DRF's per-field details under ``errors``.
    """
    exc = _translate(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = getattr(exc, "detail", None)
    if isinstance(detail, (dict, list)):
        message, code = _first_message(detail)
        body: dict[str, Any] = {"detail": message, "code": code, "errors": response.data}
    else:
        body = {"detail": str(detail), "code": getattr(detail, "code", None) or "error"}
    body.update(getattr(exc, "extra", {}))
    response.data = body
    if isinstance(exc, ServiceUnavailable):
        response["Retry-After"] = str(exc.retry_after)
    return response


# --------------------------------------------------------------------------- parsing


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, with every way a body can fail to parse answered as a 400.

    DRF catches ``ValueError`` only; a deeply nested document (``[[[[…]]]]``) exhausts the
    recursion limit of ``json`` and would otherwise surface as a 500.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except (RecursionError, ValueError, UnicodeError) as exc:
            raise exceptions.ParseError(f"JSON parse error - {type(exc).__name__}") from None


# --------------------------------------------------------------------------- base view


class EmbrecAPIView(APIView):
    """Base view: settings-driven permissions and throttles, consistent error bodies."""

    schema = EmbrecAutoSchema()
    #: OpenAPI parameters built when the schema is generated (see :mod:`embrec.api.schema`).
    schema_parameters: tuple = ()
    #: Added in front of the configured permission classes (personal endpoints).
    required_permission_classes: tuple = ()
    #: Added after the configured throttle classes (search: the encoder runs per request).
    required_throttle_classes: tuple = ()

    def get_parsers(self):
        # The configured parsers, with DRF's JSON parser replaced by one that never raises a 500.
        return [
            SafeJSONParser() if type(parser) is JSONParser else parser
            for parser in super().get_parsers()
        ]

    def get_permissions(self):
        configured = embrec_settings.API_PERMISSION_CLASSES
        classes = self.permission_classes if configured is None else configured
        return [cls() for cls in (*self.required_permission_classes, *classes)]

    def get_throttles(self):
        configured = embrec_settings.API_THROTTLE_CLASSES
        classes = self.throttle_classes if configured is None else configured
        return [cls() for cls in (*classes, *self.required_throttle_classes)]

    def get_exception_handler(self):
        return exception_handler

    # -- helpers ---------------------------------------------------------------------------

    #: The serializer of the endpoint's query parameters (read endpoints).
    params_class: type[ReadParams] | None = None

    def options(self, request, rec) -> QueryOptions:
        """The request's query parameters, validated once for a query on ``rec``."""
        assert self.params_class is not None
        return self.params_class.parse(request.query_params, rec, request=request)

    def respond(self, request, rec, results: list[Result], options: QueryOptions) -> Response:
        context = {"request": request, "object_serializer": object_serializer_for(rec)}
        return Response(
            {
                "type": rec.label,
                "limit": options.limit,
                "results": ResultSerializer(results, many=True, context=context).data,
            }
        )


# --------------------------------------------------------------------------- OpenAPI bits

ERRORS = {
    400: ErrorSerializer,
    401: ErrorSerializer,
    403: ErrorSerializer,
    404: ErrorSerializer,
    429: ErrorSerializer,
    503: ErrorSerializer,
}
TYPE_IN_PATH = partial(openapi.type_parameter, OpenApiParameter.PATH)
TYPE_IN_QUERY = partial(openapi.type_parameter, OpenApiParameter.QUERY)


# --------------------------------------------------------------------------- views


class SimilarItemsView(EmbrecAPIView):
    """``GET items/<type>/<pk>/similar/`` — nearest neighbours of one object."""

    params_class = SimilarParams
    schema_parameters = (TYPE_IN_PATH,)

    @extend_schema(
        summary="Objects similar to one object",
        parameters=[
            OpenApiParameter(
                "object_pk", str, OpenApiParameter.PATH, description="The object's primary key."
            ),
        ],
        responses={200: ResultListSerializer, 409: ErrorSerializer, **ERRORS},
    )
    def get(self, request, type: str, object_pk: str):
        rec = registry.get(type)
        shown = rec.get_visible_queryset(request)
        pk = self._clean_pk(rec, type, object_pk)
        try:
            options = self.options(request, rec)
        except EmbrecError:
            self._get_object(rec, shown, type, object_pk, pk)  # a missing object's 404 first
            raise
        scope = Scope.build(rec, options, user=request.user, shown=shown)
        # The object is loaded only when the search finds nothing: the search itself checks that
        # the request may see it (hidden objects get the same 404 as missing ones).
        results = pipeline.similar_to_key(
            pk,
            scope,
            options,
            load=lambda: self._get_object(rec, shown, type, object_pk, pk),
            source_shown=True,
        )
        return self.respond(request, rec, results, options)

    @staticmethod
    def _clean_pk(rec, type: str, pk: str) -> Any:
        try:
            return clean_value(rec.model._meta.pk, rec.pk_from_string(pk))
        except (ValueError, TypeError, DjangoValidationError):
            raise EmbrecAPIError(
                f"No {type} with pk {pk!r}.", code="not_found", status_code=404
            ) from None

    @staticmethod
    def _get_object(rec, shown, type: str, pk: str, value: Any):
        try:
            return shown.get(pk=value)
        except (rec.model.DoesNotExist, ValueError, TypeError, DjangoValidationError):
            # Hidden objects get the same answer as missing ones.
            raise EmbrecAPIError(
                f"No {type} with pk {pk!r}.", code="not_found", status_code=404
            ) from None


class PopularItemsView(EmbrecAPIView):
    """``GET items/<type>/popular/`` — most popular visible objects (works for anyone)."""

    params_class = PopularParams
    schema_parameters = (TYPE_IN_PATH,)

    @extend_schema(
        summary="Most popular objects",
        responses={200: ResultListSerializer, **ERRORS},
    )
    def get(self, request, type: str):
        rec = registry.get(type)
        options = self.options(request, rec)
        scope = Scope.build(rec, options, request=request, user=request.user)
        return self.respond(request, rec, pipeline.popular(scope, options), options)


class RecommendationsView(EmbrecAPIView):
    """``GET recommendations/`` — personal recommendations for the current user.

    Users with the permission ``embrec.view_user_recommendations`` (superusers implicitly) may
    pass ``user=<pk>`` to see another user's recommendations, whose explanations show that user's
    history; anyone else gets 403. Staff status alone is not enough.
    """

    required_permission_classes = (IsAuthenticated,)
    params_class = RecommendationParams
    schema_parameters = (TYPE_IN_QUERY,)

    @extend_schema(
        summary="Personal recommendations",
        parameters=[
            OpenApiParameter(
                "user",
                str,
                description="Another user's pk; needs the permission "
                "embrec.view_user_recommendations.",
            ),
        ],
        responses={200: ResultListSerializer, **ERRORS},
    )
    def get(self, request):
        rec = get_registration(request.query_params.get("type") or None)
        user = self._target_user(request)
        options = self.options(request, rec)
        scope = Scope.build(rec, options, request=request, user=user)
        return self.respond(request, rec, pipeline.recommend(scope, options), options)

    @staticmethod
    def _target_user(request):
        wanted = request.query_params.get("user")
        if wanted in (None, "") or wanted == str(request.user.pk):
            return request.user
        if not request.user.has_perm(VIEW_USER_RECOMMENDATIONS):
            raise exceptions.PermissionDenied(
                "Asking for another user's recommendations needs the permission "
                f"{VIEW_USER_RECOMMENDATIONS}."
            )
        User = get_user_model()
        try:
            return User._default_manager.get(pk=clean_value(User._meta.pk, wanted))
        except (User.DoesNotExist, ValueError, TypeError, DjangoValidationError):
            raise EmbrecAPIError(
                f"No user with pk {wanted!r}.", code="not_found", status_code=404, field="user"
            ) from None


class SearchView(EmbrecAPIView):
    """``GET search/?q=...`` — semantic search from free text (throttled by ``search``)."""

    required_throttle_classes = (SearchRateThrottle,)
    params_class = SearchParams
    schema_parameters = (TYPE_IN_QUERY,)

    @extend_schema(
        summary="Semantic search",
        responses={200: ResultListSerializer, **ERRORS},
    )
    def get(self, request):
        rec = get_registration(request.query_params.get("type") or None)
        options = self.options(request, rec)
        scope = Scope.build(rec, options, request=request, user=request.user)
        return self.respond(request, rec, pipeline.search(scope, options), options)


class InteractionsView(EmbrecAPIView):
    """``POST interactions/`` — record events of the current user (one, or a batch)."""

    required_permission_classes = (IsAuthenticated,)

    @extend_schema(
        summary="Record interactions",
        request=PolymorphicProxySerializer(
            component_name="InteractionRequest",
            serializers=[InteractionEventSerializer, InteractionBatchSerializer],
            resource_type_field_name=None,
        ),
        responses={201: InteractionResultSerializer, 415: ErrorSerializer, **ERRORS},
        examples=[
            OpenApiExample("One event", value={"type": "shop.product", "pk": "42", "kind": "like"}),
            OpenApiExample(
                "A batch",
                value={
                    "events": [
                        {"type": "shop.product", "pk": "42", "kind": "view"},
                        {"type": "shop.product", "pk": "7", "kind": "dislike"},
                    ]
                },
            ),
        ],
    )
    def post(self, request):
        data = request.data
        if isinstance(data, list):
            data = {"events": data}
        elif not isinstance(data, dict) or "events" not in data:
            data = {"events": [data]}
        serializer = InteractionBatchSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        events = serializer.validated_data["events"]
        objects = self._load_objects(request, events)
        now = timezone.now()
        to_record = []
        for i, event in enumerate(events):
            at = event.get("at")
            if at is not None and at > now:
                raise EmbrecAPIError(
                    f"events[{i}].at is in the future.", code="invalid", field="at"
                )
            to_record.append(Event(objects[i], event["kind"], None, at))
        with transaction.atomic():
            record_interactions(request.user, to_record)
        return Response({"recorded": len(to_record)}, status=status.HTTP_201_CREATED)

    @staticmethod
    def _load_objects(request, events) -> dict[int, Any]:
        """Each event's object, loaded per type in one query; hidden objects count as missing."""
        wanted: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        for i, event in enumerate(events):
            rec = registry.get(event["type"])
            try:
                pk = clean_value(rec.model._meta.pk, rec.pk_from_string(event["pk"]))
                wanted[rec.label].append((i, pk))
            except (ValueError, TypeError, DjangoValidationError):
                raise EmbrecAPIError(
                    f"No {event['type']} with pk {event['pk']!r} (events[{i}]).",
                    code="not_found",
                    status_code=404,
                    field="pk",
                ) from None
        found: dict[int, Any] = {}
        for label, items in wanted.items():
            rec = registry.get(label)
            objects = rec.get_visible_queryset(request).in_bulk([pk for _, pk in items])
            for i, pk in items:
                if pk not in objects:
                    raise EmbrecAPIError(
                        f"No {label} with pk {events[i]['pk']!r} (events[{i}]).",
                        code="not_found",
                        status_code=404,
                        field="pk",
                    )
                found[i] = objects[pk]
        return found
