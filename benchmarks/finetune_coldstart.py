"""Cold-start items on MovieLens-100k: base MiniLM vs MiniLM fine-tuned on co-consumed movies.

A random share of the movies (``--cold``, default 20 %) is held out with *all* their ratings: no
interaction with them is seen in training, so only their text (title, year, genres, as the demo
embeds them) can place them. The text encoder is fine-tuned on co-consumed pairs mined from the
remaining movies' ratings only (:class:`embrec.evaluation.methods.FinetunedItemVectors`, the same
code the evaluation command uses). Each user's profile is the mean of the unit vectors of their
positively rated (3★ and up, the demo's positive kinds) training movies; the held-out movies are
ranked by cosine to it, and Recall@10 / NDCG@10 count the user's positively rated held-out movies.

Hyper-parameters are chosen on a *validation* fold: a further share of the training movies held
out the same way (fine-tuning then sees neither fold). The chosen configuration is then trained on
all training movies and the test fold is read once.

    python benchmarks/finetune_coldstart.py --json docs/evaluation/finetune_coldstart.json

Runs on CPU by default (``--device cuda`` on a GPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

from embrec.encoders.finetune import FinetunedEncoder  # noqa: E402
from embrec.encoders.sentence_transformer import default_model_path  # noqa: E402
from embrec.evaluation.methods import (  # noqa: E402
    FinetunedItemVectors,
    FixedItemVectors,
    user_profiles,
)
from embrec.evaluation.metrics import ndcg_at_k, recall_at_k  # noqa: E402
from embrec.evaluation.split import InteractionLog, Split  # noqa: E402
from project.catalog.movielens import load_ml100k  # noqa: E402

#: Validation grid: small on purpose (each point is a fine-tuning run on 2 CPU cores).
GRID = [
    {"learning_rate": 1e-4, "max_pairs_per_item": 10, "window": 5},
    {"learning_rate": 2e-4, "max_pairs_per_item": 10, "window": 5},
    {"learning_rate": 1e-4, "max_pairs_per_item": 20, "window": 10},
]


def movie_text(movie: dict) -> str:
    """What ``project.catalog.recommendables.MovieRecommendable.get_text`` returns."""
    genres = ", ".join(movie["genres"].split())
    year = f" ({movie['year']})" if movie["year"] else ""
    return f"{movie['title']}{year}. Genres: {genres}."


def cold_split(log: InteractionLog, cold: np.ndarray) -> Split:
    """Training = positive interactions with warm items; test = each user's cold positives."""
    is_cold = np.zeros(log.n_items, dtype=bool)
    is_cold[cold] = True
    positive = log.weights > 0
    train = log.subset(positive & ~is_cold[log.item_index])
    held = log.subset(positive & is_cold[log.item_index])
    has_profile = np.bincount(train.user_index, minlength=log.n_users) > 0
    users, items = [], []
    for user in np.unique(held.user_index):
        if has_profile[user]:
            users.append(int(user))
            items.append(np.unique(held.item_index[held.user_index == user]).astype(np.int32))
    return Split(
        train=train, test_users=np.array(users, dtype=np.int32), test_items=items, holdout=0
    )


def score(split: Split, cold: np.ndarray, matrix: np.ndarray, mask: np.ndarray, k: int = 10):
    """Recall@k and NDCG@k ranking only the cold items, per-user values for paired intervals."""
    profiles = user_profiles(split.train, matrix, mask)
    cold_vectors = matrix[cold]
    recall, ndcg = [], []
    for user, relevant in zip(split.test_users, split.test_items, strict=True):
        sims = cold_vectors @ profiles[user]
        ranked = [int(cold[i]) for i in np.argsort(-sims, kind="stable")[:k]]
        rel = {int(i) for i in relevant}
        recall.append(recall_at_k(ranked, rel, k))
        ndcg.append(ndcg_at_k(ranked, rel, k))
    return np.array(recall), np.array(ndcg)


def bootstrap(diff: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [diff[rng.integers(0, diff.size, diff.size)].mean() for _ in range(rounds)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=float, default=0.2, help="share of movies held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-pairs", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--grid", type=int, default=len(GRID), help="validation points to try")
    parser.add_argument(
        "--chosen",
        help="JSON training parameters already chosen on validation: skip the validation grid "
        "(the base model is still scored on the validation fold) and read the test once",
    )
    parser.add_argument("--source", help="recbole wheel (default: fetched into .embrec/cache)")
    parser.add_argument("--json")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.monotonic()
    data = load_ml100k(args.source)
    movies = {m["movielens_id"]: m for m in data.movies}
    log = InteractionLog.from_records(
        # The demo's weights: 1-2 stars are dislikes (negative), 3 stars and up positive.
        ((u, i, ts, 1.0 if r >= 3 else -3.0) for u, i, r, ts in data.ratings),
        catalog=[str(m) for m in sorted(movies)],
    )
    texts = [movie_text(movies[int(key)]) for key in log.items]

    def texts_for(items):
        return [movie_text(movies[int(key)]) for key in items]

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(log.n_items)
    n_test = int(round(args.cold * log.n_items))
    test_cold = np.sort(order[:n_test])
    warm = order[n_test:]
    n_val = int(round(args.cold * warm.size))
    val_cold = np.sort(warm[:n_val])

    base_model = default_model_path()
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(base_model, device=args.device)
    base_matrix = base.encode(texts, batch_size=256, normalize_embeddings=True)
    base_vectors = FixedItemVectors(base_matrix, name="minilm")
    encoder = FinetunedEncoder(
        "finetuned",
        train_device=args.device,
        epochs=args.epochs,
        max_pairs=args.max_pairs,
        train_batch_size=args.batch_size,
        seed=args.seed + 1,
    )

    # Validation: the test movies' ratings are removed entirely, the validation movies held out.
    without_test = np.ones(log.n_items, dtype=bool)
    without_test[test_cold] = False
    val_log = log.subset(without_test[log.item_index])
    val_split = cold_split(val_log, val_cold)
    m, k = base_vectors.vectors(val_split)
    base_val = score(val_split, val_cold, m, k)
    validation = [
        {"config": "base MiniLM", "recall@10": base_val[0].mean(), "ndcg@10": base_val[1].mean()}
    ]
    print(
        f"validation: {len(val_cold)} cold movies, {len(val_split.test_users)} users; "
        f"base MiniLM NDCG@10 {base_val[1].mean():.4f} Recall@10 {base_val[0].mean():.4f}",
        flush=True,
    )
    best = None
    if args.chosen:
        best = {"config": json.loads(args.chosen), "ndcg@10": None}
    for config in [] if args.chosen else GRID[: args.grid]:
        source = FinetunedItemVectors(encoder, texts_for, params=config)
        m, k = source.vectors(val_split)
        recall, ndcg = score(val_split, val_cold, m, k)
        row = {
            "config": config,
            "recall@10": float(recall.mean()),
            "ndcg@10": float(ndcg.mean()),
            "pairs": source.stats.pairs,
            "steps": source.stats.steps,
            "seconds": round(source.stats.seconds, 1),
            "pairs_per_second": round(source.stats.pairs_per_second, 1),
        }
        validation.append(row)
        print(f"  {row}", flush=True)
        if best is None or row["ndcg@10"] > best["ndcg@10"]:
            best = row

    # Test, once: fine-tune on every training movie with the chosen configuration.
    test_split = cold_split(log, test_cold)
    m, k = base_vectors.vectors(test_split)
    base_test = score(test_split, test_cold, m, k)
    source = FinetunedItemVectors(encoder, texts_for, params=best["config"])
    m, k = source.vectors(test_split)
    tuned_test = score(test_split, test_cold, m, k)
    random_rng = np.random.default_rng(args.seed)
    random_matrix = random_rng.normal(size=base_matrix.shape).astype(np.float32)
    m, k = FixedItemVectors(random_matrix).vectors(test_split)
    random_test = score(test_split, test_cold, m, k)
    lo, hi = bootstrap(tuned_test[1] - base_test[1])
    result = {
        "protocol": {
            "cold_share": args.cold,
            "seed": args.seed,
            "test_cold_movies": int(n_test),
            "validation_cold_movies": int(n_val),
            "test_users": int(len(test_split.test_users)),
            "positive": "rating >= 3",
            "k": 10,
        },
        "training": {
            "epochs": args.epochs,
            "max_pairs": args.max_pairs,
            "batch_size": args.batch_size,
            "device": args.device,
            "threads": torch.get_num_threads(),
            "chosen": best["config"],
            "pairs": source.stats.pairs,
            "steps": source.stats.steps,
            "seconds": round(source.stats.seconds, 1),
            "pairs_per_second": round(source.stats.pairs_per_second, 1),
        },
        "validation": validation,
        "test": {
            "random": {"recall@10": random_test[0].mean(), "ndcg@10": random_test[1].mean()},
            "base MiniLM": {"recall@10": base_test[0].mean(), "ndcg@10": base_test[1].mean()},
            "fine-tuned MiniLM": {
                "recall@10": tuned_test[0].mean(),
                "ndcg@10": tuned_test[1].mean(),
            },
            "ndcg_ratio": tuned_test[1].mean() / max(base_test[1].mean(), 1e-12),
            "recall_ratio": tuned_test[0].mean() / max(base_test[0].mean(), 1e-12),
            "ndcg_difference_95ci": [lo, hi],
        },
        "machine": f"{platform.machine()} {platform.processor()} {os.cpu_count()} CPUs",
        "total_seconds": round(time.monotonic() - started, 1),
    }
    result = json.loads(json.dumps(result, default=float))
    print(json.dumps(result["test"], indent=2))
    print(json.dumps(result["training"]), f"total {result['total_seconds']} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
