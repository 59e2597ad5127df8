"""The :class:`Recommendable` base class: how one model becomes recommendable.

Subclass it in ``<app>/recommendables.py`` and register it::

    import embrec

    @embrec.register(Movie)
    class MovieRecommendable(embrec.Recommendable):
        fields = ["title", "genres"]          # or override get_text()
        encoders = ["default"]                # aliases from EMBREC["ENCODERS"]
        filter_fields = ["year", "studio__country"]  # filters the API accepts
        select_related = ["studio"]           # loaded with results (no N+1)

        def get_queryset(self):               # which objects are indexed and shown
            return Movie.objects.filter(published=True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models

from embrec.conf import embrec_settings


def resolve_field_path(model: type[models.Model], path: str) -> models.Field:
    """The field ``path`` names on ``model``: ``"year"``, or ``"category__slug"`` through
    forward foreign keys and one-to-one fields. Raises ``FieldDoesNotExist`` naming the part of
    the path that is wrong (a missing field, or a step that is not a forward relation)."""
    current = model
    parts = path.split("__")
    field = None
    for n, part in enumerate(parts):
        field = current._meta.get_field(part)
        if n == len(parts) - 1:
            break
        if not (field.is_relation and (field.many_to_one or field.one_to_one)) or (
            field.auto_created and not field.concrete
        ):
            raise FieldDoesNotExist(
                f"{current.__name__}.{part} is not a foreign key or one-to-one field, so "
                f"{path!r} cannot follow it."
            )
        current = field.related_model
    if field is None or not field.concrete or field.many_to_many:
        raise FieldDoesNotExist(f"{path!r} does not end on a concrete field of {current.__name__}.")
    return field


class Recommendable:
    """Describes one registered model. One instance per model, created by ``register``.

    Attributes (all optional):

    * ``fields`` — model fields (or attribute/method names) joined to make the item text.
    * ``encoders`` — encoder aliases; default ``EMBREC["DEFAULT_ENCODERS"]``. The first one
      serves similar items and personal recommendations when a query names none.
    * ``search_encoder`` — the alias (one of ``encoders``) that embeds search text when a query
      names none; default: the first of ``encoders`` that works from text.
    * ``similar_encoder`` — the alias (one of ``encoders``) that serves similar items when a
      query names none; default: the first of ``encoders``. Lets a site list "people who liked
      this also liked" from one encoder and rank personal recommendations with another.
    * ``filter_fields`` — fields the read path may filter on (exact, ``__gte``/``__lte`` …):
      a field name, or a path through foreign keys to a field of a related model
      (``"category__slug"``), checked at registration; values are cleaned by the field the
      path ends on.
    * ``map_fields`` — fields (or paths through foreign keys) the admin's embedding map may colour
      points by, the first value of each; default: ``fields`` then ``filter_fields``.
    * ``select_related`` / ``prefetch_related`` — relations loaded with results (by the Python
      API and the REST endpoints), so that rendering them costs no query per result. Passed to
      the ``QuerySet`` methods of the same names; see :meth:`get_results_queryset`.
    * ``serializer_class`` — dotted path or class of a DRF serializer for API results.
    * ``text_separator`` — what joins the field values (default ``". "``).
    * ``image_field`` — the ``ImageField``/``FileField`` image encoders read (see
      :meth:`get_image`).
    """

    fields: Sequence[str] = ()
    encoders: Sequence[str] | None = None
    search_encoder: str | None = None
    similar_encoder: str | None = None
    filter_fields: Sequence[str] = ()
    map_fields: Sequence[str] = ()
    select_related: Sequence[str] = ()
    prefetch_related: Sequence[Any] = ()
    serializer_class: Any = None
    text_separator: str = ". "
    image_field: str | None = None

    def __init__(self, model: type[models.Model]):
        self.model = model

    # -- identity ----------------------------------------------------------------------------

    @property
    def label(self) -> str:
        """``"app_label.model_name"``, the key used in URLs and commands."""
        return self.model._meta.label_lower

    def get_encoders(self) -> list[str]:
        """Encoder aliases used for this model."""
        if self.encoders is not None:
            return list(self.encoders)
        return list(embrec_settings.DEFAULT_ENCODERS)

    # -- hooks -------------------------------------------------------------------------------

    def get_queryset(self) -> models.QuerySet:
        """Objects that are indexed and may be recommended. Default: all objects."""
        return self.model._default_manager.all()

    def get_visible_queryset(self, request=None) -> models.QuerySet:
        """Objects this request may see in results. Default: :meth:`get_queryset`.

        Override for per-user rules (tenants, drafts…); results never contain other objects.
        """
        return self.get_queryset()

    def get_results_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        """``queryset`` (already restricted to visible objects) as results are loaded from it.

        Default: :attr:`select_related` and :attr:`prefetch_related` applied. Override to add
        ``only()``/``annotate()``; keep the rows the same, visibility is decided before.
        """
        if self.select_related:
            queryset = queryset.select_related(*self.select_related)
        if self.prefetch_related:
            queryset = queryset.prefetch_related(*self.prefetch_related)
        return queryset

    def get_filter_field(self, name: str) -> models.Field:
        """The model field a ``filter_fields`` entry ends on (see :func:`resolve_field_path`)."""
        return resolve_field_path(self.model, name)

    def should_index(self, obj: models.Model) -> bool:
        """Per-object veto evaluated by the worker. Default: index every object."""
        return True

    def get_text(self, obj: models.Model) -> str:
        """The text that is embedded. Default: the values of ``fields`` joined."""
        parts = []
        for name in self.fields:
            value = getattr(obj, name)
            if callable(value):
                value = value()
            if value is None or value == "":
                continue
            if isinstance(value, (list, tuple, set)):
                value = ", ".join(str(v) for v in value)
            parts.append(str(value))
        return self.text_separator.join(parts)

    def get_image(self, obj: models.Model) -> Any:
        """The image that image encoders embed, or ``None`` when the object has none. Default:
        the file in :attr:`image_field` (``None`` when that field is empty or unset). Override to
        return another ``FieldFile``, a path, bytes or a PIL image."""
        if not self.image_field:
            return None
        value = getattr(obj, self.image_field)
        if callable(value):
            value = value()
        return value or None

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def content_hash(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def pk_from_string(self, value: str) -> Any:
        return self.model._meta.pk.to_python(value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} for {self.label}>"
