"""Compare behavioural encoders on MovieLens-100k on a *validation* split (parameters are chosen
here; the test split is left for the final evaluation).

Splits: each user's 10 most recent distinct positively-rated movies are the test set and are
dropped; of what remains, each user's 10 most recent are the validation set. Everything is trained
on the rest.

Measures:

* personal recommendations: NDCG@10, Recall@10 (embrec's evaluation runner);
* similar items: next-item hit rate (HR@10 of the similar list of a user's last training movie
  holding their first validation movie), hub share (share of all top-10 list slots taken by the
  1 % most frequent results), rare share (share of the top-60 movies' list slots taken by movies
  with fewer than 10 training users), popularity ratio (median over the top-60 movies of the
  median support of their results / their own support);
* cold items: 5 % of the movies lose every training interaction; cold recall@10 (held-out cold
  pairs found in the top 10), cold share (of top-10 slots), cold items present in any similar
  list, and cold list overlap (a cold movie's similar list vs its item-kNN list computed with its
  ratings).

Usage::

    .venv/bin/python benchmarks/encoders_validation.py [--only NAME ...] [--json PATH] [--test]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import django  # noqa: E402

django.setup()

from embrec.encoders.als import ALSEncoder  # noqa: E402
from embrec.encoders.cooccurrence import CooccurrenceEncoder  # noqa: E402
from embrec.encoders.item2vec import Item2VecEncoder  # noqa: E402
from embrec.evaluation.baselines import ALSMethod, ItemKNNMethod, PopularityMethod  # noqa: E402
from embrec.evaluation.methods import (  # noqa: E402
    AdaptiveItemVectors,
    ALSItemVectors,
    EmbeddingMethod,
    FixedItemVectors,
    HybridItemVectors,
    Item2VecItemVectors,
    TrainedItemVectors,
    item_support,
)
from embrec.evaluation.metrics import top_k  # noqa: E402
from embrec.evaluation.runner import evaluate_method  # noqa: E402
from embrec.evaluation.split import InteractionLog, Split, temporal_split  # noqa: E402
from project.catalog.movielens import load_ml100k  # noqa: E402

WEIGHTS = {5: 5.0, 4: 3.0, 3: 1.0, 2: -3.0, 1: -3.0}  # the demo's kinds and weights
K = 10


def load():
    data = load_ml100k()
    records = [(u, i, ts, WEIGHTS[int(r)]) for u, i, r, ts in data.ratings]
    catalog = [str(m["movielens_id"]) for m in data.movies]
    log = InteractionLog.from_records(records, catalog=catalog)
    titles = {str(m["movielens_id"]): m["title"] for m in data.movies}
    texts = []
    for m in data.movies:
        year = f" ({m['year']})" if m.get("year") else ""
        genres = ", ".join(g for g in m["genres"].split("|") if g) if m.get("genres") else ""
        texts.append(f"{m['title']}{year}. Genres: {genres}.")
    return log, titles, texts


def content_matrix(texts: list[str]) -> np.ndarray:
    cache = ROOT / ".embrec" / "cache" / "ml100k-minilm.npy"
    if cache.exists():
        return np.load(cache)
    from embrec.encoders.sentence_transformer import SentenceTransformerEncoder

    vectors = SentenceTransformerEncoder("default").encode(texts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def validation_split(log: InteractionLog) -> Split:
    test = temporal_split(log, holdout=10)
    return temporal_split(test.train, holdout=10)


def cold_split(split: Split, share: float = 0.05, seed: int = 7) -> tuple[Split, np.ndarray]:
    train = split.train
    support = item_support(train)
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(support > 0)
    cold = np.zeros(train.n_items, dtype=bool)
    cold[rng.choice(candidates, int(len(candidates) * share), replace=False)] = True
    reduced = train.subset(~cold[train.item_index])
    return Split(reduced, split.test_users, split.test_items, split.holdout, split.stats), cold


# ------------------------------------------------------------------------------ similar items


def similar_lists(matrix: np.ndarray, mask: np.ndarray, k: int = K) -> np.ndarray:
    sims = matrix @ matrix.T
    sims[:, ~mask] = -np.inf
    np.fill_diagonal(sims, -np.inf)
    lists = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    lists[~mask] = -1
    return lists


def knn_vectors(train: InteractionLog) -> tuple[np.ndarray, np.ndarray]:
    x = train.subset(train.weights > 0).matrix(binary=True).toarray().T.astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    mask = norms[:, 0] > 0
    norms[norms == 0] = 1
    return x / norms, mask


def similar_measures(split: Split, lists: np.ndarray, support: np.ndarray) -> dict:
    train = split.train
    seqs = train.subset(train.weights > 0).sequences()
    hits, n = 0, 0
    for user, held in zip(split.test_users, split.test_items, strict=True):
        if not seqs[user]:
            continue
        previous = seqs[user][-1]
        n += 1
        hits += int(held[0] in set(lists[previous]))
    valid = lists[lists >= 0]
    counts = np.bincount(valid, minlength=train.n_items)
    top = max(1, int(0.01 * train.n_items))
    hub_share = float(np.sort(counts)[::-1][:top].sum() / max(valid.size, 1))
    top60 = np.argsort(-support, kind="stable")[:60]
    slots = lists[top60]
    rare_share = float(np.mean(support[slots[slots >= 0]] < 10))
    ratios = [np.median(support[lists[s][lists[s] >= 0]]) / support[s] for s in top60 if support[s]]
    return {
        "next_item_hr@10": hits / max(n, 1),
        "hub_share": hub_share,
        "rare_in_top60_lists": rare_share,
        "pop_ratio": float(np.median(ratios)),
    }


def named_lists(lists, items, titles, names=("50", "127", "181")):
    out = {}
    pos = {k: n for n, k in enumerate(items)}
    for key in names:
        out[titles[key]] = [titles[items[j]] for j in lists[pos[key]][:10] if j >= 0]
    return out


# ------------------------------------------------------------------------------ runs


def run(name, method_factory, source_factory, split, cold_info, titles, show=False):
    started = time.perf_counter()
    split_val, (cold_split_, cold) = split, cold_info
    support = item_support(split_val.train)
    result = {"name": name}
    method = method_factory(source_factory())
    res = evaluate_method(method, split_val, k=K)
    result.update({k: round(v, 4) for k, v in res.metrics.items() if not k.startswith("hit")})
    if isinstance(method, EmbeddingMethod):
        lists = similar_lists(method.items, method.mask)
    elif isinstance(method, ItemKNNMethod):
        lists = similar_lists(*knn_vectors(split_val.train))
    else:
        lists = None
    if lists is not None:
        result.update(
            {k: round(v, 4) for k, v in similar_measures(split_val, lists, support).items()}
        )
        if show:
            result["lists"] = named_lists(lists, split_val.train.items, titles)
    # Cold items.
    method = method_factory(source_factory())
    method.fit(cold_split_)
    users = cold_split_.test_users
    from embrec.evaluation.runner import seen_items

    seen = seen_items(cold_split_, users)
    found, total, slots, cold_slots = 0, 0, 0, 0
    for lo in range(0, len(users), 256):
        batch = users[lo : lo + 256]
        ranked = top_k(method.score(batch), K, seen[lo : lo + 256])
        for row, held in zip(ranked, cold_split_.test_items[lo : lo + 256], strict=True):
            relevant = {int(i) for i in held if cold[i]}
            found += len(relevant & set(int(i) for i in row))
            total += len(relevant)
            slots += len(row)
            cold_slots += int(cold[row].sum())
    result["cold_recall@10"] = round(found / max(total, 1), 4)
    result["cold_share"] = round(cold_slots / max(slots, 1), 4)
    if isinstance(method, EmbeddingMethod):
        cl = similar_lists(method.items, method.mask)
        warm_lists = cl[~cold & method.mask]
        result["cold_in_similar"] = round(
            float(np.isin(np.flatnonzero(cold), warm_lists).mean()), 4
        )
        # A cold item's own list against what its co-ratings say (item-kNN on the full training
        # data, where it is not cold): overlap of the top 10s.
        truth = similar_lists(*knn_vectors(split_val.train))
        overlaps = [len(set(cl[i]) & set(truth[i])) / K for i in np.flatnonzero(cold & method.mask)]
        result["cold_list_overlap"] = round(float(np.mean(overlaps)), 4)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def configurations(content: np.ndarray):
    minilm = lambda: FixedItemVectors(content, name="minilm")  # noqa: E731

    def i2v(**opts):
        base = {"workers": 1}
        return Item2VecEncoder("item2vec", **{**base, **opts})

    def emb(popularity=0.0, last=None, uniform=True, prior=None, prior_strength=5.0, **_):
        return lambda source: EmbeddingMethod(
            source.name,
            source,
            popularity=popularity,
            last=last,
            uniform=uniform,
            prior=prior,
            prior_strength=prior_strength,
        )

    deployed = {"last": 3, "popularity": 0.6}
    configs = {
        "item-knn": (lambda _: ItemKNNMethod(), lambda: None),
        "als-baseline": (lambda _: ALSMethod(), lambda: None),
        "popularity": (lambda _: PopularityMethod(), lambda: None),
        "hybrid-deployed": (
            emb(**deployed),
            lambda: HybridItemVectors(
                [Item2VecItemVectors(i2v()), minilm()], [1.0, 0.5], name="hybrid"
            ),
        ),
        "item2vec-default": (emb(**deployed), lambda: Item2VecItemVectors(i2v())),
    }
    for factors in (32, 64):
        for reg in (0.05, 0.5):
            for sim in ("exact", "cosine"):
                enc = ALSEncoder(
                    "als", factors=factors, regularization=reg, iterations=15, similarity=sim
                )
                configs[f"als-enc f{factors} r{reg} {sim}"] = (
                    emb(),
                    lambda enc=enc: ALSItemVectors(enc, name="als"),
                )
    i2v_grid = {
        "i2v tuned A": {
            "ns_exponent": -0.5,
            "window": 10,
            "epochs": 30,
            "sample": 1e-3,
            "min_count": 5,
        },
        "i2v tuned B": {
            "ns_exponent": 0.5,
            "window": 20,
            "epochs": 30,
            "sample": 1e-4,
            "min_count": 5,
            "center": True,
        },
        "i2v tuned C": {
            "ns_exponent": -0.5,
            "window": 50,
            "epochs": 20,
            "sample": 1e-4,
            "min_count": 5,
            "center": True,
        },
    }
    for name, opts in i2v_grid.items():
        configs[name] = (emb(**deployed), lambda opts=opts: TrainedItemVectors(i2v(**opts)))
        configs[name + " plain"] = (emb(), lambda opts=opts: TrainedItemVectors(i2v(**opts)))
    for behaviour_name, behaviour in (
        (
            "als",
            lambda: ALSItemVectors(
                ALSEncoder("als", factors=64, regularization=0.5, similarity="cosine"), name="als"
            ),
        ),
        ("i2v", lambda: TrainedItemVectors(i2v(**i2v_grid["i2v tuned C"]))),
    ):
        for k in (5.0, 20.0):
            configs[f"adaptive {behaviour_name} k{k:g}"] = (
                emb(**deployed),
                lambda behaviour=behaviour, k=k: AdaptiveItemVectors(
                    behaviour(), minilm(), shrinkage=k, min_support=5, fit_support=20
                ),
            )
            configs[f"adaptive {behaviour_name} k{k:g} pop0.3"] = (
                emb(last=3, popularity=0.3),
                lambda behaviour=behaviour, k=k: AdaptiveItemVectors(
                    behaviour(), minilm(), shrinkage=k, min_support=5, fit_support=20
                ),
            )
            configs[f"adaptive {behaviour_name} k{k:g} plain"] = (
                emb(),
                lambda behaviour=behaviour, k=k: AdaptiveItemVectors(
                    behaviour(), minilm(), shrinkage=k, min_support=5, fit_support=20
                ),
            )
    for factors, reg, alpha in (
        (64, 2.0, 1.0),
        (64, 5.0, 1.0),
        (128, 2.0, 1.0),
        (64, 2.0, 5.0),
        (32, 2.0, 1.0),
    ):
        enc = ALSEncoder(
            "als", factors=factors, regularization=reg, alpha=alpha, similarity="cosine"
        )
        configs[f"als-sim f{factors} r{reg:g} a{alpha:g} cosine"] = (
            emb(**deployed),
            lambda enc=enc: ALSItemVectors(enc, name="als"),
        )
    for k, min_support in ((1.0, 1), (2.0, 1), (2.0, 3), (5.0, 1)):
        configs[f"adaptive-grid als k{k:g} min{min_support}"] = (
            emb(**deployed),
            lambda k=k, m=min_support: AdaptiveItemVectors(
                ALSItemVectors(
                    ALSEncoder("als", factors=64, regularization=0.5, similarity="cosine"),
                    name="als",
                ),
                minilm(),
                shrinkage=k,
                min_support=m,
            ),
        )
    for alpha, reg in ((1.0, 0.5), (5.0, 2.0)):
        for rescale in (False, True):
            for k in (2.0, 5.0):
                configs[f"adaptive2 a{alpha:g} r{reg:g} k{k:g} rescale{int(rescale)}"] = (
                    emb(**deployed),
                    lambda alpha=alpha, reg=reg, k=k, rescale=rescale: AdaptiveItemVectors(
                        ALSItemVectors(
                            ALSEncoder(
                                "als",
                                factors=64,
                                regularization=reg,
                                alpha=alpha,
                                similarity="cosine",
                            ),
                            name="als",
                        ),
                        minilm(),
                        shrinkage=k,
                        rescale=rescale,
                    ),
                )
    for unc in (0.3, 0.6, 0.9):
        for k in (2.0, 20.0):
            configs[f"adaptive3 a5 r2 k{k:g} unc{unc:g}"] = (
                emb(**deployed),
                lambda unc=unc, k=k: AdaptiveItemVectors(
                    ALSItemVectors(
                        ALSEncoder(
                            "als", factors=64, regularization=2.0, alpha=5.0, similarity="cosine"
                        ),
                        name="als",
                    ),
                    minilm(),
                    shrinkage=k,
                    uncertainty=unc,
                ),
            )

    # The demo's configuration (project/settings.py).
    def demo_als(similarity="cosine"):
        return ALSEncoder("mf", factors=64, regularization=2.0, alpha=5.0, similarity=similarity)

    def demo_adaptive():
        return AdaptiveItemVectors(
            ALSItemVectors(demo_als(), name="mf"), minilm(), shrinkage=2, uncertainty=0.6
        )

    configs["final adaptive (demo)"] = (emb(**deployed), demo_adaptive)
    configs["final adaptive (demo) plain"] = (emb(), demo_adaptive)
    configs["final mf cosine, last 3, pop 0.6"] = (
        emb(**deployed),
        lambda: ALSItemVectors(demo_als(), name="mf"),
    )
    configs["final mf exact fold-in"] = (emb(), lambda: ALSItemVectors(demo_als("exact")))
    configs["final mf exact fold-in, pop 0.6"] = (
        emb(popularity=0.6),
        lambda: ALSItemVectors(demo_als("exact")),
    )
    for unc in (0.0, 0.3, 0.6):
        configs[f"cmp unc{unc:g} plain"] = (
            emb(),
            lambda unc=unc: AdaptiveItemVectors(
                ALSItemVectors(demo_als(), name="mf"), minilm(), shrinkage=2, uncertainty=unc
            ),
        )
    configs["robust i2v (tuned C) adaptive k5 unc0.3"] = (
        emb(**deployed),
        lambda: AdaptiveItemVectors(
            TrainedItemVectors(i2v(**i2v_grid["i2v tuned C"])),
            minilm(),
            shrinkage=5,
            uncertainty=0.3,
        ),
    )
    configs["adaptive als k5 centered"] = (
        emb(**deployed),
        lambda: AdaptiveItemVectors(
            ALSItemVectors(
                ALSEncoder("als", factors=64, regularization=0.5, similarity="cosine"), name="als"
            ),
            minilm(),
            shrinkage=5,
            center=True,
            rescale=False,
        ),
    )
    # Co-occurrence (item-kNN's cosine, truncated SVD), alone and under the adaptive hybrid.
    for dims in (96, 128, 192):
        configs[f"cooc d{dims}"] = (
            emb(**deployed),
            lambda dims=dims: TrainedItemVectors(CooccurrenceEncoder("cooc", dimensions=dims)),
        )
    for k in (2.0, 5.0):
        for unc in (0.3,):
            configs[f"adaptive cooc d128 k{k:g} unc{unc:g}"] = (
                emb(**deployed),
                lambda k=k, unc=unc: AdaptiveItemVectors(
                    TrainedItemVectors(CooccurrenceEncoder("cooc", dimensions=128)),
                    minilm(),
                    shrinkage=k,
                    uncertainty=unc,
                ),
            )

    for k in (0.0, 0.5, 1.0, 2.0):
        configs[f"adaptive cooc d128 k{k:g} min1 unc0.3"] = (
            emb(**deployed),
            lambda k=k: AdaptiveItemVectors(
                TrainedItemVectors(CooccurrenceEncoder("cooc", dimensions=128)),
                minilm(),
                shrinkage=k,
                min_support=1,
                uncertainty=0.3,
            ),
        )

    # The popularity prior (POPULARITY_PRIOR quantile q, POPULARITY_PRIOR_STRENGTH n) with the
    # deployed profile, on the demo's adaptive over ALS and on adaptive over co-occurrence.
    def adaptive_over(behaviour):
        return lambda: AdaptiveItemVectors(behaviour(), minilm(), shrinkage=2, uncertainty=0.3)

    bases = {
        "mf": lambda: ALSItemVectors(demo_als(), name="mf"),
        "cooc": lambda: TrainedItemVectors(CooccurrenceEncoder("cooc", dimensions=128)),
    }
    for base, behaviour in bases.items():
        for q, n in (
            (None, 5.0),
            (0.25, 1.0),
            (0.5, 1.0),
            (0.25, 5.0),
            (0.5, 5.0),
            (0.75, 0.1),
            (0.8, 0.1),
            (0.85, 0.1),
            (0.9, 0.1),
            (0.9, 1.0),
            (1.0, 0.1),
        ):
            label = "none" if q is None else f"q{q:g} n{n:g}"
            configs[f"prior adaptive {base} {label}"] = (
                emb(**deployed, prior=q, prior_strength=n),
                adaptive_over(behaviour),
            )
    return configs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--show", action="store_true")
    parser.add_argument("--json")
    parser.add_argument(
        "--test",
        action="store_true",
        help="measure on the test split (train on everything before each user's last 10); "
        "read it once, after choosing on validation",
    )
    args = parser.parse_args()
    log, titles, texts = load()
    content = content_matrix(texts)
    split = temporal_split(log, holdout=10) if args.test else validation_split(log)
    cold_info = cold_split(split)
    results = []
    for name, (factory, source) in configurations(content).items():
        if args.only and not any(o in name for o in args.only):
            continue
        result = run(name, factory, source, split, cold_info, titles, show=args.show)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
