"""Evaluation on a site's own data: interactions from the ``Interaction`` table, item vectors of
the configured encoders, and method specifications as the command accepts them.

A method specification is a baseline name (``random``, ``popularity``, ``item-knn``, ``als``) or
an encoder alias from ``EMBREC["ENCODERS"]`` with optional profile options after a colon::

    item2vec                       # profile = all training items, cosine only
    item2vec:last=3,popularity=0.5 # last 3 items, blended with popularity like the read path
    hybrid:half_life=30,pool=40    # time decay (days); re-rank only the 40 nearest

Options: ``last`` (int), ``half_life`` (days), ``popularity`` (0–1), ``pool`` (int: the nearest
unseen items re-ranked), ``popular_pool`` (int: most popular unseen items re-ranked with them),
``uniform`` (1: positive interactions weigh 1, negative ones 0 in profiles), ``name`` (label in
reports), and ``deployed`` (1: take ``last``, ``half_life``, ``uniform``, ``popularity``,
``pool``, ``popular_pool`` and the popularity prior from the site's ``EMBREC`` settings, i.e.
score exactly as ``recommend(user, limit=k)`` does; explicit options still win)::

    hybrid:deployed=1
    hybrid:deployed=1,popularity=0.6
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
from django.core.exceptions import ImproperlyConfigured

from embrec.conf import embrec_settings
from embrec.encoders import get_encoder
from embrec.encoders.adaptive import AdaptiveHybridEncoder
from embrec.encoders.als import ALSEncoder
from embrec.encoders.finetune import FinetunedEncoder
from embrec.encoders.hybrid import HybridEncoder
from embrec.encoders.item2vec import Item2VecEncoder
from embrec.encoders.trained import TrainedEncoder
from embrec.evaluation.baselines import (
    ALSMethod,
    ItemKNNMethod,
    Method,
    PopularityMethod,
    RandomMethod,
)
from embrec.evaluation.methods import (
    AdaptiveItemVectors,
    ALSItemVectors,
    EmbeddingMethod,
    FinetunedItemVectors,
    FixedItemVectors,
    HybridItemVectors,
    Item2VecItemVectors,
    ItemVectors,
    TrainedItemVectors,
)
from embrec.evaluation.split import InteractionLog
from embrec.items import Recommendable
from embrec.models import Embedding, Interaction, content_type_of
from embrec.storage import parse_vector

BASELINES: dict[str, Callable[[], Method]] = {
    "random": RandomMethod,
    "popularity": PopularityMethod,
    "item-knn": ItemKNNMethod,
    "als": ALSMethod,
}

#: Profile options of the tuned embrec variant the command adds for each encoder by default.
TUNED_OPTIONS = {"last": 3, "popularity": 0.6}

_OPTION_TYPES: dict[str, Callable[[str], object]] = {
    "last": int,
    "half_life": float,
    "popularity": float,
    "pool": int,
    "popular_pool": int,
    "uniform": lambda v: v.lower() in ("1", "true", "yes"),
    "deployed": lambda v: v.lower() in ("1", "true", "yes"),
    "name": str,
}


def deployed_options(k: int) -> dict:
    """Profile, popularity blend, pool and popularity-prior options equivalent to the read path
    under the current ``EMBREC`` settings, for ``recommend(user, limit=k, ...)``."""

    return {
        "last": int(embrec_settings.USER_VECTOR_MAX_INTERACTIONS),
        "half_life": embrec_settings.USER_VECTOR_HALF_LIFE_DAYS,
        "uniform": embrec_settings.USER_VECTOR_WEIGHTING == "uniform",
        "popularity": float(embrec_settings.RECOMMEND_POPULARITY),
        "pool": k * max(int(embrec_settings.RERANK_POOL_FACTOR), 1),
        "popular_pool": int(embrec_settings.RERANK_POPULAR_CANDIDATES or 0),
        "prior": embrec_settings.POPULARITY_PRIOR,
        "prior_strength": float(embrec_settings.POPULARITY_PRIOR_STRENGTH),
    }


class MethodSpecError(ValueError):
    """A method specification that cannot be understood."""


def interactions_from_database(
    rec: Recommendable,
    *,
    kinds: Sequence[str] | None = None,
) -> InteractionLog:
    """All interactions on ``rec``'s model as an :class:`InteractionLog`.

    The catalog is ``rec.get_queryset()`` (what may be recommended); interactions on objects
    outside it are ignored. Timestamps are ``created_at``.
    """

    ct = content_type_of(rec.model)
    catalog = [str(pk) for pk in rec.get_queryset().order_by("pk").values_list("pk", flat=True)]
    qs = Interaction.objects.filter(content_type=ct)
    if kinds:
        qs = qs.filter(kind__in=list(kinds))
    records = qs.order_by("id").values_list("user_id", "object_pk", "created_at", "weight")
    return InteractionLog.from_records(records.iterator(chunk_size=10000), catalog=catalog)


def content_vectors(rec: Recommendable, alias: str, items: Sequence[str]) -> ItemVectors:
    """Vectors of ``items`` under the text encoder ``alias``.

    Stored vectors are used when they carry the encoder's current identity; the others are
    encoded now from :meth:`Recommendable.get_text`. Content vectors never depend on interactions,
    so using stored ones leaks nothing. A fine-tuned text encoder learned from interactions: it
    is fine-tuned again on the training split (:func:`finetuned_item_vectors`).
    """

    encoder = get_encoder(alias)
    if isinstance(encoder, FinetunedEncoder):
        # Its stored vectors come from a fine-tune on all interactions, held-out ones included.
        return finetuned_item_vectors(rec, alias)
    ct = content_type_of(rec.model)
    position = {key: n for n, key in enumerate(items)}
    matrix = np.zeros((len(items), encoder.dimensions), dtype=np.float32)
    mask = np.zeros(len(items), dtype=bool)
    stored = Embedding.objects.filter(
        content_type=ct, encoder=alias, identity=encoder.identity.as_string()
    ).values_list("object_pk", "vector")
    for pk, vector in stored.iterator(chunk_size=2000):
        row = position.get(pk)
        if row is not None:
            matrix[row] = parse_vector(vector)
            mask[row] = True
    missing = [key for key in items if not mask[position[key]]]
    if missing:
        objects = rec.get_queryset().in_bulk([rec.pk_from_string(pk) for pk in missing])
        by_key = {str(pk): obj for pk, obj in objects.items()}
        keys = [k for k in missing if k in by_key]
        for lo in range(0, len(keys), 256):
            chunk = keys[lo : lo + 256]
            vectors = encoder.encode([rec.get_text(by_key[k]) for k in chunk])
            for key, vector in zip(chunk, vectors, strict=True):
                matrix[position[key]] = vector
                mask[position[key]] = True
    return FixedItemVectors(matrix, mask, name=alias)


def item_vectors_for_alias(
    alias: str,
    content: Callable[[str], ItemVectors],
) -> ItemVectors:
    """The :class:`ItemVectors` source that reproduces encoder ``alias`` leak-free.

    ``content(alias)`` supplies vectors of text encoders. item2vec encoders are retrained on the
    training split; hybrids combine their parts the same way.
    """

    encoder = get_encoder(alias)
    trained = trained_item_vectors(alias, content)
    if trained is not None:
        return trained
    if isinstance(encoder, Item2VecEncoder):
        return Item2VecItemVectors(encoder, name=alias)
    if isinstance(encoder, HybridEncoder):
        return HybridItemVectors(
            [item_vectors_for_alias(name, content) for name, _ in encoder.parts],
            [weight for _, weight in encoder.parts],
            encoder.mode,
            name=alias,
        )
    if isinstance(encoder, TrainedEncoder):
        # Any other trained encoder (e.g. co-occurrence vectors): retrained on the split.
        return TrainedItemVectors(encoder, name=alias)
    if not encoder.uses_text:
        raise MethodSpecError(
            f"Encoder {alias!r} learns from interactions and has no leak-free evaluation; "
            "only text, item2vec and hybrid encoders can be evaluated."
        )
    return content(alias)


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"alias:last=3,popularity=0.5"`` → ``("alias", {"last": 3, "popularity": 0.5})``."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise MethodSpecError(f"Empty method name in {spec!r}.")
    options: dict = {}
    if rest:
        for part in rest.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in _OPTION_TYPES:
                raise MethodSpecError(
                    f"Bad option {part!r} in {spec!r}; options are "
                    f"{', '.join(sorted(_OPTION_TYPES))} as key=value."
                )
            try:
                options[key] = _OPTION_TYPES[key](value.strip())
            except ValueError:
                raise MethodSpecError(f"Option {key!r} in {spec!r} has a bad value.") from None
    return name, options


def build_methods(
    specs: Sequence[str],
    content: Callable[[str], ItemVectors],
    *,
    k: int = 10,
) -> list[Method]:
    """Methods for specifications (see the module docstring); raises :class:`MethodSpecError`."""

    methods: list[Method] = []
    for spec in specs:
        name, options = parse_spec(spec)
        key = name.lower().replace("_", "-")
        if key in ("itemknn", "knn"):
            key = "item-knn"
        if key in BASELINES:
            if set(options) - {"name"}:
                raise MethodSpecError(f"Baseline {name!r} takes no options ({spec!r}).")
            method = BASELINES[key]()
            method.name = options.get("name", key)
            methods.append(method)
            continue
        if name not in embrec_settings.ENCODERS:
            choices = sorted([*BASELINES, *embrec_settings.ENCODERS])
            raise MethodSpecError(
                f"Unknown method {name!r}; choose from {', '.join(choices)} "
                "(encoder aliases take options, e.g. item2vec:last=3,popularity=0.5)."
            )
        try:
            source = item_vectors_for_alias(name, content)
        except ImproperlyConfigured as exc:
            raise MethodSpecError(str(exc)) from exc
        label = options.pop("name", spec)
        if options.pop("deployed", False):
            options = {**deployed_options(k), **options}
        try:
            methods.append(
                EmbeddingMethod(
                    label,
                    source,
                    last=options.get("last"),
                    half_life_days=options.get("half_life"),
                    popularity=options.get("popularity", 0.0),
                    pool=options.get("pool"),
                    popular_pool=options.get("popular_pool", 0),
                    uniform=bool(options.get("uniform", False)),
                    prior=options.get("prior"),
                    prior_strength=options.get("prior_strength", 5.0),
                )
            )
        except ValueError as exc:
            raise MethodSpecError(f"{spec!r}: {exc}") from None
    return methods


def default_specs(rec: Recommendable) -> list[str]:
    """Baselines, then each encoder of ``rec`` plain and with :data:`TUNED_OPTIONS`."""
    tuned = ",".join(f"{k}={v}" for k, v in TUNED_OPTIONS.items())
    specs = list(BASELINES)
    for alias in rec.get_encoders():
        specs += [alias, f"{alias}:{tuned}"]
    return specs


def item_labels(rec: Recommendable, items: Sequence[str]) -> list[str]:
    """``str(obj)`` of each item key (the key itself for objects outside the queryset)."""
    objects = rec.get_queryset().in_bulk([rec.pk_from_string(pk) for pk in items])
    by_key = {str(pk): str(obj) for pk, obj in objects.items()}
    return [by_key.get(key, key) for key in items]


def item_field_sets(rec: Recommendable, items: Sequence[str], field: str) -> list[set]:
    """The values of ``field`` of each item as a set, for coherence measures: a string is split
    on whitespace, ``|`` and ``,``; a list, tuple or set is taken as it is; a related manager
    gives its objects' primary keys. Raises ``ValueError`` for a field the model lacks."""
    objects = rec.get_queryset().in_bulk([rec.pk_from_string(pk) for pk in items])
    out: list[set] = []
    for key in items:
        obj = objects.get(rec.pk_from_string(key))
        if obj is None:
            out.append(set())
            continue
        if not hasattr(obj, field):
            raise ValueError(f"{rec.label} has no field {field!r}")
        value = getattr(obj, field)
        if callable(value):
            value = value()
        if hasattr(value, "all") and hasattr(value, "model"):
            value = [str(pk) for pk in value.all().values_list("pk", flat=True)]
        if isinstance(value, str):
            value = [v for v in re.split(r"[\s|,]+", value) if v]
        elif value is None:
            value = []
        elif not isinstance(value, list | tuple | set | frozenset):
            value = [value]
        out.append({str(v) for v in value})
    return out


def trained_item_vectors(alias: str, content: Callable[[str], ItemVectors]) -> ItemVectors | None:
    """Leak-free :class:`ItemVectors` of the ALS encoder (users folded in) and of adaptive
    hybrids (their behavioural part retrained on the split, the content map fitted on training
    items only); ``None`` for other encoders."""

    encoder = get_encoder(alias)
    if isinstance(encoder, ALSEncoder):
        return ALSItemVectors(encoder, name=alias)
    if isinstance(encoder, AdaptiveHybridEncoder):
        behaviour = encoder.behaviour_encoder()
        return AdaptiveItemVectors(
            item_vectors_for_alias(encoder.options["behaviour"], content),
            item_vectors_for_alias(encoder.options["content"], content),
            shrinkage=encoder.params["shrinkage"],
            min_support=encoder.params["min_support"],
            fit_support=encoder.params["fit_support"],
            ridge=encoder.params["ridge"],
            center=encoder.params["center"],
            rescale=encoder.params["rescale"],
            uncertainty=encoder.params["uncertainty"],
            min_weight=float(behaviour.options.get("min_weight", 0.0)),
            name=alias,
        )
    return None


def content_source(rec: Recommendable, items: Sequence[str]) -> Callable[[str], ItemVectors]:
    """The ``content(alias)`` callable the commands pass to :func:`item_vectors_for_alias`: one
    :func:`content_vectors` source per alias (a fine-tuned text encoder is fine-tuned again on
    each split's training interactions, never read from its stored vectors)."""
    cache: dict[str, ItemVectors] = {}

    def content(alias: str) -> ItemVectors:
        if alias not in cache:
            cache[alias] = content_vectors(rec, alias, items)
        return cache[alias]

    return content


def item_texts(rec: Recommendable) -> Callable[[Sequence[str]], list[str | None]]:
    """A function from item keys to :meth:`Recommendable.get_text` (``None`` for keys no longer
    in ``rec.get_queryset()``)."""

    def texts(items: Sequence[str]) -> list[str | None]:
        found: dict[str, str] = {}
        keys = list(items)
        for lo in range(0, len(keys), 1000):
            chunk = keys[lo : lo + 1000]
            objects = rec.get_queryset().in_bulk([rec.pk_from_string(pk) for pk in chunk])
            found.update({str(pk): rec.get_text(obj) for pk, obj in objects.items()})
        return [found.get(str(key)) for key in keys]

    return texts


def finetuned_item_vectors(rec: Recommendable, alias: str, **params) -> ItemVectors:
    """Leak-free vectors of the fine-tuned text encoder ``alias``: its base model fine-tuned on
    the split's training interactions only, then every item of the catalog encoded from its
    text (so held-out and cold-start items are scored as new items would be). ``params``
    override the encoder's training parameters."""

    return FinetunedItemVectors(get_encoder(alias), item_texts(rec), params=params, name=alias)
