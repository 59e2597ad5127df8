"""Where one read query looks: the registration, what the request may see, what is left out.

A :class:`Scope` is computed once per query from the validated
:class:`~embrec.read.options.QueryOptions`: the registration and its content type, the objects the
request may see (:meth:`~embrec.Recommendable.get_visible_queryset`) with the options' filters,
and the :class:`Exclusions` (explicit keys, the user's disliked or all seen items). Retrieval,
popularity and hydration all take their restriction from it; nothing recomputes visibility.

The user's excluded items are one subquery (:meth:`Exclusions.user_items`), used as SQL in the
ANN statement, as an ORM condition, and as a key set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections, models
from django.db.models import Q
from django.db.models.expressions import RawSQL

from embrec.encoders import get_encoder
from embrec.exceptions import QueryError
from embrec.items import Recommendable
from embrec.models import Interaction, content_type_of
from embrec.read.options import QueryOptions
from embrec.registry import registry


def get_registration(model: Any = None) -> Recommendable:
    """The registration for a model, instance or label; with ``None``, the only one there is."""
    if model is not None:
        return model if isinstance(model, Recommendable) else registry.get(model)
    registrations = registry.all()
    if len(registrations) == 1:
        return registrations[0]
    known = ", ".join(sorted(r.label for r in registrations)) or "none"
    raise QueryError(
        f"Say which registered model to query (registered: {known}).",
        code="type_required",
        field="type",
    )


def encoder_for(rec: Recommendable, encoder: str | None) -> str:
    """The alias to query: ``encoder`` if the registration uses it, else its first encoder."""
    encoders = rec.get_encoders()
    if encoder is None:
        return encoders[0]
    if encoder not in encoders:
        raise QueryError(
            f"{rec.label} is not embedded with encoder {encoder!r} (it uses {', '.join(encoders)}).",
            code="unknown_encoder",
            field="encoder",
        )
    return encoder


def similar_encoder_for(rec: Recommendable, encoder: str | None) -> str:
    """The alias similar items use: the given one, the registration's ``similar_encoder``, or
    its first encoder."""
    if encoder is None and rec.similar_encoder in rec.get_encoders():
        return rec.similar_encoder
    return encoder_for(rec, encoder)


def text_encoder_for(rec: Recommendable, encoder: str | None) -> str:
    """The encoder that embeds search text: the given one, the registration's
    ``search_encoder``, or its first text encoder."""
    if encoder is not None:
        alias = encoder_for(rec, encoder)
        if not get_encoder(alias).uses_text:
            raise QueryError(
                f"Encoder {alias!r} learns from interactions and cannot embed search text.",
                code="unknown_encoder",
                field="encoder",
            )
        return alias
    if rec.search_encoder and rec.search_encoder in rec.get_encoders():
        return text_encoder_for(rec, rec.search_encoder)
    for alias in rec.get_encoders():
        if get_encoder(alias).uses_text:
            return alias
    raise QueryError(
        f"None of {rec.label}'s encoders embeds text, so it cannot be searched.",
        code="search_unavailable",
        field="type",
    )


def user_id_of(user: Any) -> Any:
    """The pk of an authenticated user; ``None`` for anonymous users and ``None``."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.pk


def request_user(request: Any) -> Any:
    """``request.user``, or ``None`` without a request."""
    return getattr(request, "user", None) if request is not None else None


@dataclass(frozen=True)
class Exclusions:
    """Objects left out of a query: explicit pks, and a user's disliked (or all seen) items."""

    pks: tuple[str, ...] = ()
    user_id: Any = None
    content_type_id: int | None = None
    seen: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "pks", tuple(str(pk) for pk in self.pks))

    def excluding(self, pks: Iterable[Any]) -> Exclusions:
        """These exclusions plus ``pks``."""
        return replace(self, pks=(*self.pks, *(str(pk) for pk in pks)))

    def user_items(self) -> models.QuerySet | None:
        """The ``object_pk`` of the user's excluded items (disliked, or every interacted item
        with ``seen``) as a values queryset; ``None`` without a user."""
        if self.user_id is None:
            return None
        items = Interaction.objects.filter(
            user_id=self.user_id, content_type_id=self.content_type_id
        )
        if not self.seen:
            items = items.filter(weight__lt=0)
        return items.values("object_pk")

    def sql(self, alias: str = "e") -> list[tuple[str, list]]:
        """``NOT`` conditions for the ANN query. ``NOT IN (subquery)`` stays a hashed filter on
        the index scan (PostgreSQL never turns it into an anti-join), so the HNSW order is kept."""
        parts: list[tuple[str, list]] = []
        if self.pks:
            parts.append((f"NOT ({alias}.object_pk = ANY(%s))", [list(self.pks)]))
        items = self.user_items()
        if items is not None:
            sub_sql, sub_params = items.query.sql_with_params()
            parts.append((f"{alias}.object_pk NOT IN ({sub_sql})", list(sub_params)))
        return parts

    def pk_set(self) -> set[str]:
        """The excluded primary keys as strings (one indexed query for the user's part)."""
        excluded = set(self.pks)
        items = self.user_items()
        if items is not None:
            excluded.update(items.values_list("object_pk", flat=True))
        return excluded

    def q(self, field_name: str = "object_pk") -> Q:
        """The same exclusions for ORM queries over a table with an ``object_pk`` column."""
        q = Q()
        if self.pks:
            q |= Q(**{f"{field_name}__in": list(self.pks)})
        items = self.user_items()
        if items is not None:
            q |= Q(**{f"{field_name}__in": items})
        return q


@dataclass(frozen=True, eq=False)
class Scope:
    """The objects one query may return.

    ``shown`` is what the request may see (the registration's visible queryset); ``visible`` is
    ``shown`` narrowed by the options' filters (what results come from); ``exclusions`` are left
    out of ``visible``.
    """

    rec: Recommendable
    content_type_id: int
    shown: models.QuerySet
    visible: models.QuerySet
    user_id: Any = None
    exclusions: Exclusions = field(default_factory=Exclusions)

    @classmethod
    def build(
        cls,
        rec: Recommendable,
        options: QueryOptions,
        *,
        request: Any = None,
        user: Any = None,
        shown: models.QuerySet | None = None,
    ) -> Scope:
        """The scope of a query by ``user`` (``None``: anonymous) through ``request``.

        ``shown`` is ``rec.get_visible_queryset(request)`` when the caller has it already.
        """
        ct = content_type_of(rec.model)
        if shown is None:
            shown = rec.get_visible_queryset(request)
        visible = shown.filter(options.filters) if options.filters else shown
        user_id = user_id_of(user)
        exclusions = Exclusions(user_id=user_id, content_type_id=ct.id, seen=options.exclude_seen)
        return cls(rec, ct.id, shown, visible, user_id, exclusions)

    def excluding(self, pks: Iterable[Any]) -> Scope:
        """This scope with ``pks`` left out too."""
        return replace(self, exclusions=self.exclusions.excluding(pks))


def visible_sql(visible: models.QuerySet | None, alias: str = "e") -> tuple[str, list] | None:
    """A condition on ``alias.object_pk`` that holds for objects of ``visible``.

    Written as a correlated ``EXISTS`` that looks each candidate up by primary key (one index
    probe per row the HNSW scan returns, whatever the size of the visible set), wrapped in
    ``IS TRUE`` so that PostgreSQL keeps it as a filter on the index scan instead of turning it
    into a join (a join would need a sort and lose the index order). ``OFFSET 0`` keeps the
    sub-select from being simplified: without it PostgreSQL may plan the ``EXISTS`` as a hashed
    sub-plan that reads the whole visible table on every query (measured at 100k objects: ~27 ms
    instead of ~1-3 ms per query).
    """
    if visible is None or not visible.query.where:
        return None
    # Compiled once per queryset object (a query checks the same one for its source object and
    # its candidates); a filtered or otherwise cloned queryset is a new object and compiles again.
    compiled = visible.__dict__.get("_embrec_visible_sql")
    if compiled is None:
        compiled = _compile_visible(visible)
        visible._embrec_visible_sql = compiled
    if compiled is _UNRESTRICTED:
        return None
    sql, params = compiled
    return sql.replace(_ALIAS, alias), list(params)


#: Stands for the outer table's alias in compiled visibility conditions.
_ALIAS = "__embrec_outer__"
_UNRESTRICTED = ("", ())


def _compile_visible(visible: models.QuerySet) -> tuple[str, tuple]:
    pk = visible.model._meta.pk
    db_type = pk.rel_db_type(connections[visible.db])
    if not db_type:
        return _UNRESTRICTED
    column = f"{_ALIAS}.object_pk"
    if pk.get_internal_type() not in {"CharField", "TextField", "SlugField"}:
        column = f"CAST({column} AS {db_type})"
    try:
        sub_sql, sub_params = (
            visible.order_by().filter(pk=RawSQL(column, [])).values("pk").query.sql_with_params()
        )
    except EmptyResultSet:
        # Django proved the queryset empty (e.g. ``pk__in=[]``): no object is visible.
        return "FALSE", ()
    return f"(EXISTS ({sub_sql} OFFSET 0)) IS TRUE", tuple(sub_params)
