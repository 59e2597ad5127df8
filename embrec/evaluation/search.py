"""Search spaces: what every method may try on validation.

A method specification (as ``embrec_evaluate --methods`` takes it) becomes a
:class:`~embrec.evaluation.runner.Family`:

* a **bare name** (``als``, ``ease``, ``hybrid``) is *tuned*: it tries up to
  :data:`~embrec.evaluation.baselines.SEARCH_BUDGET` configurations of its grid on validation —
  the same budget for embrec's encoders and for every baseline;
* a name **with options** (``item2vec:last=3,popularity=0.6``, ``hybrid:deployed=1``) is a
  *fixed* configuration: evaluated as given, nothing is chosen for it.

embrec's grid (:data:`EMBREC_GRID`) covers the profile (``last``: the most recent distinct
items, ``uniform`` weighting) and the popularity blend; a hybrid encoder also tries the weight of
each part after the first (:data:`HYBRID_PART_WEIGHTS`). The candidate pool is the read path's
(``limit × RERANK_POOL_FACTOR`` nearest plus ``RERANK_POPULAR_CANDIDATES`` popular ones) and the
half-life the site's, so the tuned figures are those ``recommend()`` would serve.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from embrec.conf import embrec_settings
from embrec.evaluation.baselines import BASELINE_CLASSES, GRIDS, SEARCH_BUDGET, expand_grid
from embrec.evaluation.methods import (
    EmbeddingMethod,
    HybridItemVectors,
    ItemVectors,
    cached_source,
)
from embrec.evaluation.runner import Family
from embrec.evaluation.site import (
    MethodSpecError,
    build_methods,
    deployed_options,
    item_vectors_for_alias,
    parse_spec,
)

#: Baselines every default run includes (``random`` is the floor, not a contender).
DEFAULT_BASELINES = ["popularity", "item-knn", "recent-knn", "ease", "als"]

#: Profile and blend options embrec's encoders try on validation.
EMBREC_GRID: dict[str, list] = {
    "last": [1, 3, 5, 10],
    "popularity": [0.0, 0.4, 0.6, 0.8],
    "uniform": [True],
}

#: Weights a hybrid's later parts try (the first part keeps its weight: only ratios matter).
HYBRID_PART_WEIGHTS = [0.25, 0.5, 1.0]

_ALIASES = {"itemknn": "item-knn", "knn": "item-knn", "recentknn": "recent-knn"}


def baseline_key(name: str) -> str | None:
    key = name.lower().replace("_", "-")
    key = _ALIASES.get(key.replace("-", ""), key)
    return key if key in BASELINE_CLASSES else None


def embrec_configs(
    source: ItemVectors,
    budget: int = SEARCH_BUDGET,
    seed: int = 0,
    grid: dict[str, list] | None = None,
) -> list[dict]:
    """The configurations an embrec encoder tries: ``grid`` (default :data:`EMBREC_GRID`) ×
    hybrid part weights, sampled down to ``budget`` (seeded). Grid keys: ``last``,
    ``popularity``, ``uniform``, ``half_life``, ``pool_factor`` (× K nearest candidates),
    ``popular_pool`` and ``weights`` (a hybrid's part weights)."""
    grid = dict(EMBREC_GRID if grid is None else grid)
    if "weights" not in grid and isinstance(source, HybridItemVectors) and len(source.parts) > 1:
        rest = list(itertools.product(HYBRID_PART_WEIGHTS, repeat=len(source.parts) - 1))
        grid["weights"] = [[float(source.weights[0]), *w] for w in rest]
    return expand_grid(grid, budget=budget, seed=seed)


def embrec_family(
    alias: str,
    content: Callable[[str], ItemVectors],
    *,
    k: int = 10,
    budget: int = SEARCH_BUDGET,
    name: str | None = None,
    grid: dict[str, list] | None = None,
) -> Family:
    """A tuned family for encoder ``alias`` (item vectors computed once per split). Options the
    grid does not vary are the site's current read-path settings."""
    source = cached_source(item_vectors_for_alias(alias, content))
    serving = deployed_options(k)

    def make(params: dict) -> EmbeddingMethod:
        src = source
        if "weights" in params:
            assert isinstance(source, HybridItemVectors)  # only hybrids have part weights
            src = HybridItemVectors(source.parts, params["weights"], source.mode, source.name)
        pool = k * params["pool_factor"] if "pool_factor" in params else serving["pool"]
        return EmbeddingMethod(
            name or alias,
            src,
            last=params.get("last"),
            half_life_days=params.get("half_life", serving["half_life"]),
            popularity=params.get("popularity", 0.0),
            pool=pool,
            popular_pool=params.get("popular_pool", serving["popular_pool"]),
            uniform=bool(params.get("uniform", serving["uniform"])),
        )

    return Family(name or alias, make, embrec_configs(source, budget, grid=grid))


def baseline_family(key: str, *, budget: int = SEARCH_BUDGET, name: str | None = None) -> Family:
    cls = BASELINE_CLASSES[key]
    label = name or key

    def make(params: dict):
        method = cls(**params)
        method.name = label
        return method

    return Family(label, make, expand_grid(GRIDS[key], budget=budget) or [{}], baseline=True)


def families(
    specs: Sequence[str],
    content: Callable[[str], ItemVectors],
    *,
    k: int = 10,
    budget: int = SEARCH_BUDGET,
) -> list[Family]:
    """Families for method specifications (see the module docstring); raises
    :class:`~embrec.evaluation.site.MethodSpecError`."""

    out: list[Family] = []
    for spec in specs:
        name, options = parse_spec(spec)
        label = options.pop("name", None)
        key = baseline_key(name)
        if key is not None:
            if options:
                raise MethodSpecError(f"Baseline {name!r} takes no options ({spec!r}).")
            out.append(baseline_family(key, budget=budget, name=label or key))
            continue
        if name not in embrec_settings.ENCODERS:
            choices = sorted([*BASELINE_CLASSES, *embrec_settings.ENCODERS])
            raise MethodSpecError(
                f"Unknown method {name!r}; choose from {', '.join(choices)} "
                "(encoder aliases take options, e.g. item2vec:last=3,popularity=0.5)."
            )
        if not options:
            out.append(embrec_family(name, content, k=k, budget=budget, name=label))
            continue

        # A fixed configuration: build_methods validates it; a fresh method per split.
        def make(params: dict, spec=spec, label=label):
            (method,) = build_methods([spec], content, k=k)
            if label:
                method.name = label
            return method

        make({})  # fail early on a bad specification
        out.append(Family(label or spec, make, [{}]))
    return out


def default_specs(rec) -> list[str]:
    """The baselines of :data:`DEFAULT_BASELINES`, then each encoder of ``rec`` tuned, and the
    first (serving) encoder exactly as deployed."""

    specs = list(DEFAULT_BASELINES)
    encoders = list(rec.get_encoders())
    specs += encoders
    if encoders:
        popularity = float(embrec_settings.RECOMMEND_POPULARITY or 0.0)
        specs.append(
            f"{encoders[0]}:deployed=1,popularity={popularity:g},name={encoders[0]} (deployed)"
        )
    return specs


def describe(params: dict) -> str:
    """``{"last": 3, "popularity": 0.6}`` → ``"last=3, popularity=0.6"``."""
    parts = []
    for key, value in params.items():
        if isinstance(value, float):
            value = f"{value:g}"
        elif isinstance(value, list | tuple):
            value = "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        parts.append(f"{key}={value}")
    return ", ".join(parts) or "-"


__all__ = [
    "DEFAULT_BASELINES",
    "EMBREC_GRID",
    "HYBRID_PART_WEIGHTS",
    "baseline_family",
    "default_specs",
    "describe",
    "embrec_configs",
    "embrec_family",
    "families",
]
