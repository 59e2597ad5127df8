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

    # Three-way protocols: choose on validation, refit on train + validation, read test once.
    protocol = leave_last_protocol(log, holdout=10)  # or global_time_protocol, cold_items_protocol
    family = Family("ease", lambda p: EASEMethod(**p), [{"regularization": 100.0}, ...],
                    baseline=True)
    tuned = tune_and_test(family, protocol.validation, protocol.test, k=10)

Modules: :mod:`~embrec.evaluation.split` (interaction logs, the temporal split, the three-way
protocols), :mod:`~embrec.evaluation.metrics` (ranking metrics, paired bootstrap, similar-items
measures), :mod:`~embrec.evaluation.baselines` (random, popularity, item-kNN, recent-items kNN,
EASE, implicit ALS, their search grids), :mod:`~embrec.evaluation.search` (what each method
tries on validation), :mod:`~embrec.evaluation.runner` (evaluation, validation search, intervals,
similar-items report), :mod:`~embrec.evaluation.methods` (embrec encoders, item2vec and hybrids
with the read path's profile and popularity blend), :mod:`~embrec.evaluation.site` (the site's
database), :mod:`~embrec.evaluation.intrinsic` (word/document similarity and analogies),
:mod:`~embrec.evaluation.report` (table, JSON, PNG). Needs the ``evaluate`` extra.
"""

from embrec.evaluation.baselines import (
    ALSMethod,
    EASEMethod,
    ItemKNNMethod,
    Method,
    PopularityMethod,
    RandomMethod,
    RecentItemKNNMethod,
)
from embrec.evaluation.methods import (
    EmbeddingMethod,
    FixedItemVectors,
    HybridItemVectors,
    Item2VecItemVectors,
)
from embrec.evaluation.runner import (
    Family,
    MethodResult,
    TunedResult,
    compare_with_best,
    evaluate,
    evaluate_method,
    similar_items_report,
    tune_and_test,
)
from embrec.evaluation.split import (
    InteractionLog,
    Protocol,
    Split,
    cold_items_protocol,
    global_time_protocol,
    leave_last_protocol,
    temporal_split,
)

__all__ = [
    "ALSMethod",
    "EASEMethod",
    "Family",
    "Protocol",
    "RecentItemKNNMethod",
    "TunedResult",
    "cold_items_protocol",
    "compare_with_best",
    "global_time_protocol",
    "leave_last_protocol",
    "similar_items_report",
    "tune_and_test",
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
