"""Which models are registered with embrec, keyed ``"app_label.model_name"``.

The registry is passive: it records registrations and answers lookups. What happens on a save or
a delete of a registered model is :mod:`embrec.signals`' job (connected by
:meth:`embrec.apps.EmbrecConfig.ready`), which asks the registry.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models

from embrec.exceptions import AlreadyRegistered, NotRegistered
from embrec.items import Recommendable, resolve_field_path


class Registry:
    def __init__(self) -> None:
        self._by_label: dict[str, Recommendable] = {}

    def register(
        self,
        model: type[models.Model],
        recommendable_class: type[Recommendable] | None = None,
    ) -> Recommendable:
        if not (isinstance(model, type) and issubclass(model, models.Model)):
            raise ImproperlyConfigured(f"embrec.register() expects a model class, got {model!r}.")
        if model._meta.abstract:
            raise ImproperlyConfigured(f"Cannot register abstract model {model.__name__}.")
        recommendable_class = recommendable_class or Recommendable
        if not issubclass(recommendable_class, Recommendable):
            raise ImproperlyConfigured(
                f"{recommendable_class.__name__} must subclass embrec.Recommendable."
            )
        label = model._meta.label_lower
        if label in self._by_label:
            raise AlreadyRegistered(
                f"{label} is already registered with embrec "
                f"(by {type(self._by_label[label]).__name__})."
            )
        instance = recommendable_class(model)
        self._validate(instance)
        self._by_label[label] = instance
        return instance

    def _validate(self, instance: Recommendable) -> None:
        model = instance.model
        for attr in ("fields", "encoders", "filter_fields", "select_related", "prefetch_related"):
            if isinstance(getattr(instance, attr), str):
                raise ImproperlyConfigured(
                    f"{type(instance).__name__}.{attr} must be a list of names, not a string."
                )
        for name in instance.fields:
            try:
                model._meta.get_field(name)
            except FieldDoesNotExist:
                if not hasattr(model, name):
                    raise ImproperlyConfigured(
                        f"{type(instance).__name__}.fields names {name!r}, which is neither a "
                        f"field nor an attribute of {model.__name__}."
                    ) from None
        if not instance.fields and type(instance).get_text is Recommendable.get_text:
            raise ImproperlyConfigured(
                f"{type(instance).__name__} must set `fields` or override get_text()."
            )
        for name in instance.filter_fields:
            try:
                instance.get_filter_field(name)
            except FieldDoesNotExist as exc:
                raise ImproperlyConfigured(
                    f"{type(instance).__name__}.filter_fields names {name!r}, which is not a "
                    f"field of {model.__name__} or a path through its foreign keys ({exc})."
                ) from None
        for path in instance.select_related:
            try:
                field = resolve_field_path(model, path)
            except FieldDoesNotExist as exc:
                field, reason = None, str(exc)
            else:
                reason = "it ends on a field that is not a relation"
            if field is None or not (field.many_to_one or field.one_to_one):
                raise ImproperlyConfigured(
                    f"{type(instance).__name__}.select_related names {path!r}, which is not a "
                    f"path of foreign keys of {model.__name__}: {reason}."
                )
        for lookup in instance.prefetch_related:
            path = getattr(lookup, "prefetch_through", lookup)
            if not isinstance(path, str) or not hasattr(model, path.split("__")[0]):
                raise ImproperlyConfigured(
                    f"{type(instance).__name__}.prefetch_related names {lookup!r}, which is not "
                    f"a relation of {model.__name__}."
                )

    def unregister(self, model: type[models.Model]) -> None:
        label = model._meta.label_lower
        if label not in self._by_label:
            raise NotRegistered(f"{label} is not registered with embrec.")
        del self._by_label[label]

    def get(self, model_or_label: type[models.Model] | models.Model | str) -> Recommendable:
        """Return the registration for a model class, instance or ``"app_label.model"`` label."""
        if isinstance(model_or_label, str):
            label = model_or_label.lower()
        else:
            label = model_or_label._meta.label_lower
        try:
            return self._by_label[label]
        except KeyError:
            known = ", ".join(sorted(self._by_label)) or "none"
            raise NotRegistered(
                f"{label} is not registered with embrec (registered: {known})."
            ) from None

    def is_registered(self, model_or_label: type[models.Model] | models.Model | str) -> bool:
        """Whether a model class, instance or ``"app_label.model"`` label is registered."""
        if isinstance(model_or_label, str):
            return model_or_label.lower() in self._by_label
        meta = getattr(model_or_label, "_meta", None)
        return meta is not None and meta.label_lower in self._by_label

    def all(self) -> list[Recommendable]:
        return list(self._by_label.values())

    def __contains__(self, item) -> bool:
        return self.is_registered(item)


registry = Registry()


def register(
    model: type[models.Model],
) -> Callable[[type[Recommendable]], type[Recommendable]]:
    """Class decorator registering a :class:`Recommendable` subclass for ``model``."""

    def decorator(cls: type[Recommendable]) -> type[Recommendable]:
        registry.register(model, cls)
        return cls

    return decorator


def unregister(model: type[models.Model]) -> None:
    registry.unregister(model)
