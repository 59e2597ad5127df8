"""Offline evaluation: metrics against hand-computed values, the temporal split, no leakage."""

import math
import random

import numpy as np
import pytest

from embrec.evaluation.baselines import (
    ALSMethod,
    ItemKNNMethod,
    PopularityMethod,
    RandomMethod,
)
from embrec.evaluation.methods import (
    EmbeddingMethod,
    FixedItemVectors,
    Item2VecItemVectors,
    user_profiles,
)
from embrec.evaluation.metrics import (
    coverage,
    hit_rate_at_k,
    ndcg_at_k,
    recall_at_k,
    summarize,
    top_k,
)
from embrec.evaluation.runner import evaluate_method
from embrec.evaluation.split import InteractionLog, temporal_split

# ----------------------------------------------------------------------------- metrics


def test_metrics_match_hand_computed_values():
    ranked = [3, 1, 7, 2]
    relevant = {1, 2, 9}
    # Top 3: one hit at rank 2. DCG = 1/log2(3); ideal DCG over min(3, 3) = 3 ranks.
    ideal3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, relevant, 3) == pytest.approx((1 / math.log2(3)) / ideal3)
    assert ndcg_at_k(ranked, relevant, 3) == pytest.approx(0.296081, abs=1e-6)
    assert recall_at_k(ranked, relevant, 3) == pytest.approx(1 / 3)
    assert hit_rate_at_k(ranked, relevant, 3) == 1.0
    # Top 4 adds a hit at rank 4.
    assert ndcg_at_k(ranked, relevant, 4) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(5)) / ideal3
    )
    assert recall_at_k(ranked, relevant, 4) == pytest.approx(2 / 3)
    # A miss everywhere; a perfect list.
    assert ndcg_at_k([4, 5], {1}, 2) == 0.0
    assert hit_rate_at_k([4, 5], {1}, 2) == 0.0
    assert ndcg_at_k([1, 2], {1, 2}, 2) == pytest.approx(1.0)
    # One relevant item at rank 2 of 10: IDCG is a single rank.
    assert ndcg_at_k([5, 1], {1}, 10) == pytest.approx(1 / math.log2(3))


def test_summarize_averages_over_users_and_counts_coverage():
    recommended = [[3, 1, 7], [1, 2, 5]]
    relevant = [{1, 2, 9}, {8}]
    out = summarize(recommended, relevant, 3, n_items=10)
    assert out["ndcg@3"] == pytest.approx(0.296081 / 2, abs=1e-6)
    assert out["recall@3"] == pytest.approx((1 / 3) / 2)
    assert out["hit_rate@3"] == pytest.approx(0.5)
    assert out["coverage@3"] == pytest.approx(0.5)  # {1, 2, 3, 5, 7} of 10 items
    assert coverage([[0, 1], [1, 2]], 4) == pytest.approx(0.75)


def test_top_k_excludes_seen_items_and_breaks_ties_by_index():
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [1.0, 1.0, 1.0, 1.0]])
    out = top_k(scores, 3, [np.array([1]), np.array([], dtype=int)])
    assert out[0].tolist() == [0, 2, 3]
    assert out[1].tolist() == [0, 1, 2]


# ----------------------------------------------------------------------------- split


def tiny_log(shuffle_seed=None):
    records = [
        # u1: x and y... y and z share a timestamp: z ("z" > "y") counts as later.
        ("u1", "x", 10, 1.0),
        ("u1", "y", 20, 1.0),
        ("u1", "z", 20, 1.0),
        ("u1", "w", 30, 1.0),
        ("u1", "x", 40, 1.0),  # a repeat of a training item stays in training
        # u2 has too few items to be evaluated with holdout 2.
        ("u2", "x", 5, 1.0),
        ("u2", "y", 6, 1.0),
        # u3: a disliked item is neither consumption nor test.
        ("u3", "w", 1, 1.0),
        ("u3", "x", 2, 1.0),
        ("u3", "y", 3, -3.0),
        ("u3", "z", 4, 1.0),
        ("u3", "v", 5, 1.0),
    ]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(records)
    return InteractionLog.from_records(records, catalog=["v", "w", "x", "y", "z", "q"])


def held_out(split):
    return {
        split.train.users[u]: sorted(split.train.items[i] for i in items)
        for u, items in zip(split.test_users, split.test_items, strict=True)
    }


def test_split_holds_out_latest_distinct_items_with_documented_tie_break():
    split = temporal_split(tiny_log(), holdout=2)
    assert held_out(split) == {"u1": ["w", "z"], "u3": ["v", "z"]}
    train = {
        (split.train.users[u], split.train.items[i])
        for u, i in zip(split.train.user_index, split.train.item_index, strict=True)
    }
    assert train == {("u1", "x"), ("u1", "y"), ("u2", "x"), ("u2", "y"), ("u3", "w"), ("u3", "x")}
    # The repeated x of u1 (time 40, after the test items) stays a training interaction.
    assert len(split.train) == 7
    assert split.stats["evaluated_users"] == 2
    # "q" has no interactions but stays in the catalog.
    assert split.train.n_items == 6


def test_split_is_independent_of_input_order():
    expected = held_out(temporal_split(tiny_log(), holdout=2))
    for seed in range(5):
        assert held_out(temporal_split(tiny_log(seed), holdout=2)) == expected


def test_split_with_negatives_included_and_bad_arguments():
    split = temporal_split(tiny_log(), holdout=2, min_weight=-math.inf)
    assert held_out(split)["u3"] == ["v", "z"]
    assert ("u3", "y") in {
        (split.train.users[u], split.train.items[i])
        for u, i in zip(split.train.user_index, split.train.item_index, strict=True)
    }
    with pytest.raises(ValueError):
        temporal_split(tiny_log(), holdout=0)


# ----------------------------------------------------------------------------- leakage


def random_log(seed=3, users=40, items=30, per_user=15):
    rng = random.Random(seed)
    records = []
    for u in range(users):
        for _ in range(per_user):
            records.append((f"u{u}", f"i{rng.randrange(items)}", rng.randrange(1000), 1.0))
    return InteractionLog.from_records(records, catalog=[f"i{n}" for n in range(items + 5)])


def test_no_test_interaction_is_in_training_and_training_precedes_test():
    log = random_log()
    split = temporal_split(log, holdout=4)
    train_pairs = set(
        zip(split.train.user_index.tolist(), split.train.item_index.tolist(), strict=True)
    )
    assert split.test_pairs()
    assert not (split.test_pairs() & train_pairs)
    # Each user's held-out items were all first consumed no earlier than their training items.
    first: dict = {}
    for u, i, t in zip(log.user_index, log.item_index, log.timestamps, strict=True):
        first[(u, i)] = min(first.get((u, i), math.inf), t)
    for u, items in zip(split.test_users, split.test_items, strict=True):
        train_times = [first[(u, i)] for (uu, i) in train_pairs if uu == u]
        assert max(train_times) <= min(first[(u, i)] for i in items)


def test_user_profiles_use_training_items_only():
    log = random_log()
    split = temporal_split(log, holdout=4)
    # One-hot item vectors: a profile's non-zero entries are exactly the items it was built from.
    eye = np.eye(split.train.n_items, dtype=np.float32)
    profiles = user_profiles(split.train, eye, np.ones(split.train.n_items, dtype=bool))
    for u, items in zip(split.test_users, split.test_items, strict=True):
        assert np.all(profiles[u, items] == 0.0)
        assert profiles[u].sum() > 0
    recent = user_profiles(split.train, eye, np.ones(split.train.n_items, dtype=bool), last=2)
    assert all(np.count_nonzero(recent[u]) <= 2 for u in split.test_users)


def test_item2vec_in_evaluation_is_trained_on_the_training_split_only():
    from embrec.encoders.item2vec import Item2VecEncoder

    records = [(f"u{u}", f"i{(u + n) % 6}", n, 1.0) for u in range(12) for n in range(6)]
    # "fresh" is consumed by one user, last: it is a test item and must be unknown to item2vec.
    records.append(("u0", "fresh", 100, 1.0))
    log = InteractionLog.from_records(records)
    split = temporal_split(log, holdout=1)
    encoder = Item2VecEncoder("eval", vector_size=8, epochs=2, workers=1)
    matrix, mask = Item2VecItemVectors(encoder).vectors(split)
    fresh = log.items.index("fresh")
    assert not mask[fresh]
    assert not matrix[fresh].any()
    assert mask.sum() == len({i for i in split.train.item_index.tolist()})


# ----------------------------------------------------------------------------- methods


def grouped_log(seed=5, groups=3, per_group=8, users=60, per_user=8):
    """Users consume items of one group; popularity is skewed inside each group."""
    rng = random.Random(seed)
    records = []
    for u in range(users):
        g = u % groups
        items = [f"g{g}-{n}" for n in range(per_group)]
        chosen = rng.sample(items, per_user) if per_user <= per_group else items
        for t, item in enumerate(chosen):
            records.append((f"u{u}", item, t, 1.0))
    return InteractionLog.from_records(records)


def test_collaborative_baselines_beat_random_on_planted_groups():
    split = temporal_split(grouped_log(), holdout=2)
    random_ndcg = evaluate_method(RandomMethod(), split, k=5).metrics["ndcg@5"]
    for method in (ItemKNNMethod(neighbors=10), ALSMethod(factors=8, iterations=10)):
        result = evaluate_method(method, split, k=5)
        assert result.metrics["ndcg@5"] > random_ndcg + 0.2, method
        assert result.metrics["hit_rate@5"] > 0.9
    pop = evaluate_method(PopularityMethod(), split, k=5)
    assert 0.0 <= pop.metrics["ndcg@5"] <= 1.0


def test_embedding_method_with_group_vectors_recommends_the_group():
    log = grouped_log()
    split = temporal_split(log, holdout=2)
    # Item vectors that encode the group exactly (as a perfect content encoder would).
    groups = sorted({key.split("-")[0] for key in log.items})
    matrix = np.array(
        [[1.0 if key.startswith(g + "-") else 0.0 for g in groups] for key in log.items]
    )
    method = EmbeddingMethod("groups", FixedItemVectors(matrix, name="groups"), last=3)
    result = evaluate_method(method, split, k=5)
    assert result.metrics["hit_rate@5"] == 1.0
    # Users consumed all 8 items of their group: the 2 held out are its only unseen items.
    assert result.metrics["recall@5"] == 1.0
    blended = EmbeddingMethod(
        "blend", FixedItemVectors(matrix), popularity=0.5, pool=3, uniform=True
    )
    assert "popularity 0.5" in blended.description
    assert evaluate_method(blended, split, k=5).metrics["hit_rate@5"] > 0.5
    with pytest.raises(ValueError):
        EmbeddingMethod("bad", FixedItemVectors(matrix), popularity=1.5)
