"""Offline evaluation of recommenders on a site's own interactions.

Python API (the ``embrec_evaluate`` command is a thin layer over it)::

    from embrec.evaluation import (
        ALSMethod, EmbeddingMethod, InteractionLog, ItemKNNMethod, PopularityMethod,
        evaluate, temporal_split,
    )
    from embrec.evaluation.site import build_methods, content_vectors, interactions_from_database

    log = InteractionLog.from_records([(user, item, timestamp, weight), ...])
    split = temporal_split(log, holdout=10)          # each user's 10 latest items held out
    results = evaluate(split, [PopularityMethod(), ItemKNNMethod(), ALSMethod()], k=10)

Modules: :mod:`~embrec.evaluation.split` (interaction logs, the temporal split),
:mod:`~embrec.evaluation.metrics`, :mod:`~embrec.evaluation.baselines` (random, popularity,
item-kNN, implicit ALS), :mod:`~embrec.evaluation.methods` (embrec encoders, item2vec and hybrids
with the read path's profile and popularity blend), :mod:`~embrec.evaluation.site` (the site's
database), :mod:`~embrec.evaluation.intrinsic` (word/document similarity and analogies),
:mod:`~embrec.evaluation.report` (table, JSON, PNG). Needs the ``evaluate`` extra.
"""

from embrec.evaluation.baselines import (
    ALSMethod,
    ItemKNNMethod,
    Method,
    PopularityMethod,
    RandomMethod,
)
from embrec.evaluation.methods import (
    EmbeddingMethod,
    FixedItemVectors,
    HybridItemVectors,
    Item2VecItemVectors,
)
from embrec.evaluation.runner import MethodResult, evaluate, evaluate_method
from embrec.evaluation.split import InteractionLog, Split, temporal_split

__all__ = [
    "ALSMethod",
    "EmbeddingMethod",
    "FixedItemVectors",
    "HybridItemVectors",
    "InteractionLog",
    "Item2VecItemVectors",
    "ItemKNNMethod",
    "Method",
    "MethodResult",
    "PopularityMethod",
    "RandomMethod",
    "Split",
    "evaluate",
    "evaluate_method",
    "temporal_split",
]
