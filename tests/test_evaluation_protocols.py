"""Three-way protocols, the stronger baselines, the validation search, intervals and the
similar-items measures, each against values computed by hand on tiny fixtures."""

import math
import random

import numpy as np
import pytest

from embrec.evaluation.baselines import (
    ALSMethod,
    EASEMethod,
    ItemKNNMethod,
    PopularityMethod,
    RandomMethod,
    RecentItemKNNMethod,
    expand_grid,
    recent_items_matrix,
)
from embrec.evaluation.methods import EmbeddingMethod, FixedItemVectors, user_profiles
from embrec.evaluation.metrics import (
    coherence,
    hub_share,
    jaccard,
    next_item_hit_rate,
    paired_bootstrap,
    per_user,
    popularity_ratio,
)
from embrec.evaluation.runner import (
    Family,
    compare_with_best,
    evaluate_method,
    similar_items_report,
    similar_lists,
    tune_and_test,
)
from embrec.evaluation.split import (
    InteractionLog,
    cold_items_protocol,
    global_time_protocol,
    leave_last_protocol,
)

# ----------------------------------------------------------------------------- fixtures


def random_log(seed=3, users=60, items=40, per_user=20):
    rng = random.Random(seed)
    records = []
    for u in range(users):
        for _ in range(per_user):
            records.append((f"u{u}", f"i{rng.randrange(items)}", rng.randrange(10_000), 1.0))
    return InteractionLog.from_records(records, catalog=[f"i{n}" for n in range(items + 3)])


def pairs_of(log):
    return set(zip(log.user_index.tolist(), log.item_index.tolist(), strict=True))


def targets(split):
    return split.test_pairs()


# ----------------------------------------------------------------------------- metrics


def test_paired_bootstrap_on_constant_and_identical_differences():
    a = np.array([0.2, 0.5, 0.1, 0.4])
    same = paired_bootstrap(a, a, samples=200)
    assert same["difference"] == 0.0 and same["low"] == 0.0 and same["high"] == 0.0
    assert same["ratio"] == pytest.approx(1.0) and same["p_not_better"] == 1.0
    shifted = paired_bootstrap(a + 0.1, a, samples=200)
    # Every resample has the same difference: the interval collapses on it.
    assert shifted["difference"] == pytest.approx(0.1)
    assert shifted["low"] == pytest.approx(0.1) and shifted["high"] == pytest.approx(0.1)
    assert shifted["ratio"] == pytest.approx(0.4 / 0.3)
    assert shifted["p_not_better"] == 0.0
    noisy = paired_bootstrap(np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(4) + 0.1, samples=500)
    assert noisy["difference"] == pytest.approx(0.15)
    assert noisy["low"] < 0.15 < noisy["high"]
    with pytest.raises(ValueError):
        paired_bootstrap(a, a[:2])


def test_similar_items_measures_match_hand_computed_values():
    lists = {0: [1, 2], 1: [0, 2], 2: [1, 3], 3: [1, 2]}
    # Item 1 fills 3 of 8 slots, item 2 also 3: top-1 share 3/8, top-2 6/8.
    assert hub_share(list(lists.values()), top=1) == pytest.approx(3 / 8)
    assert hub_share(list(lists.values()), top=2) == pytest.approx(6 / 8)
    assert hub_share([], top=2) == 0.0
    # (previous, next): 0→2 hit, 1→3 miss, 2→3 hit, 5→1 no list: miss.
    assert next_item_hit_rate(lists, [(0, 2), (1, 3), (2, 3), (5, 1)]) == pytest.approx(0.5)
    popularity = np.array([10.0, 4.0, 2.0, 8.0])
    # Results' popularities 4,2,10,2,4,8,4,2 → median 4; sources 10,4,2,8 → median 6.
    assert popularity_ratio(lists, popularity) == pytest.approx(4 / 6)
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 0.0
    fields = [{"a"}, {"a", "b"}, {"b"}, {"c"}]
    expected = np.mean([1 / 2, 0, 1 / 2, 1 / 2, 1 / 2, 0, 0, 0])
    assert coherence(lists, fields) == pytest.approx(expected)


def test_per_user_metrics_are_aligned_with_users():
    out = per_user([[1, 2], [3, 4]], [{2}, {9}], 2)
    assert out["ndcg@2"].tolist() == pytest.approx([1 / math.log2(3), 0.0])
    assert out["recall@2"].tolist() == [1.0, 0.0]
    assert out["hit_rate@2"].tolist() == [1.0, 0.0]


# ----------------------------------------------------------------------------- baselines


def test_ease_equals_per_column_ridge_regression_with_zero_diagonal():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 6)) < 0.4).astype(np.float64)
    records = [(f"u{u}", f"i{i}", 0, 1.0) for u, i in zip(*np.nonzero(x), strict=True)]
    log = InteractionLog.from_records(records, catalog=[f"i{i}" for i in range(6)])
    users = sorted(set(log.users), key=lambda k: log.users.index(k))
    split = leave_last_protocol(log, holdout=1).test  # any split: fit on its training part
    method = EASEMethod(regularization=3.0)
    method.fit(split)
    x = split.train.matrix(binary=True).toarray()
    g = x.T @ x
    for j in range(6):
        others = [i for i in range(6) if i != j]
        w = np.linalg.solve(g[np.ix_(others, others)] + 3.0 * np.eye(5), g[others, j])
        assert method.weights[others, j] == pytest.approx(w, abs=1e-9)
        assert method.weights[j, j] == 0.0
    assert users  # the fixture has users
    np.testing.assert_allclose(method.score(np.arange(2)), x[:2] @ method.weights)


def test_recent_items_matrix_keeps_each_users_latest_distinct_items():
    records = [
        ("a", "x", 1, 1.0),
        ("a", "y", 2, 1.0),
        ("a", "z", 2, 1.0),  # same time as y: z is later by key
        ("a", "x", 9, 1.0),  # a repeat: x was first consumed at 1
        ("b", "y", 5, 1.0),
    ]
    log = InteractionLog.from_records(records)
    m = recent_items_matrix(log, 2).toarray()
    assert m[log.users.index("a")].tolist() == [0.0, 1.0, 1.0]  # y, z
    assert m[log.users.index("b")].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        RecentItemKNNMethod(recent=0)


def test_expand_grid_respects_the_budget():
    grid = {"a": [1, 2, 3], "b": [1, 2, 3, 4]}
    assert len(expand_grid(grid, budget=20)) == 12
    sampled = expand_grid(grid, budget=5, seed=1)
    assert len(sampled) == 5 and len({tuple(p.values()) for p in sampled}) == 5
    assert sampled == expand_grid(grid, budget=5, seed=1)
    assert expand_grid({}, budget=3) == [{}]


# ----------------------------------------------------------------------------- protocols


def test_leave_last_protocol_invariants():
    log = random_log()
    p = leave_last_protocol(log, holdout=3, validation=2)
    val, test = p.validation, p.test
    # Test users have 3 test and 2 validation items; training+validation is test's training.
    assert all(len(t) == 3 for t in test.test_items)
    assert all(len(t) == 2 for t in val.test_items)
    assert set(test.test_users.tolist()) <= set(val.test_users.tolist())
    assert pairs_of(val.train) | targets(val) == pairs_of(test.train)
    assert not (targets(val) & pairs_of(val.train))
    assert not (targets(test) & pairs_of(test.train))
    assert not (targets(test) & targets(val))
    # Per user, validation items come before test items.
    first = {}
    for u, i, t in zip(log.user_index, log.item_index, log.timestamps, strict=True):
        first[(u, i)] = min(first.get((u, i), math.inf), t)
    for u, items in zip(test.test_users, test.test_items, strict=True):
        row = val.test_users.tolist().index(u)
        assert max(first[(u, i)] for i in val.test_items[row]) <= min(first[(u, i)] for i in items)


def test_global_time_protocol_cuts_by_time_and_reports_users_without_history():
    records = [
        (f"u{u}", f"i{(u * 7 + n) % 25}", u * 3 + n * 50, 1.0) for u in range(30) for n in range(8)
    ]
    # A user who appears only in the test period has no history: not evaluated, counted.
    records += [("late", "i1", 10_000, 1.0), ("late", "i2", 10_001, 1.0)]
    log = InteractionLog.from_records(records)
    p = global_time_protocol(log, test_share=0.2, validation_share=0.2)
    val, test = p.validation, p.test
    val_cut, test_cut = val.stats["cut_off"], test.stats["cut_off"]
    assert val_cut < test_cut
    assert val.train.timestamps.max() < val_cut
    assert test.train.timestamps.max() < test_cut
    assert len(test.train) > len(val.train)
    first = {}
    for u, i, t in zip(log.user_index, log.item_index, log.timestamps, strict=True):
        first[(u, i)] = min(first.get((u, i), math.inf), t)
    for u, i in targets(test):
        assert first[(u, i)] >= test_cut
    for u, i in targets(val):
        assert val_cut <= first[(u, i)] < test_cut
    assert not (targets(test) & pairs_of(test.train))
    late = log.users.index("late")
    assert late not in test.test_users.tolist()
    assert test.stats["users_without_history"] >= 1
    with pytest.raises(ValueError):
        global_time_protocol(log, test_share=0.6, validation_share=0.5)


def test_cold_items_protocol_holds_out_every_interaction_of_cold_items():
    log = random_log()
    p = cold_items_protocol(log, share=0.2, seed=1)
    val, test = p.validation, p.test
    test_cold, val_cold = test.candidates, val.candidates
    assert test_cold.sum() == val_cold.sum() == 8 and not (test_cold & val_cold).any()
    assert not test_cold[test.train.item_index].any()
    assert not test_cold[val.train.item_index].any()
    assert not val_cold[val.train.item_index].any()
    # Validation's cold items are ordinary training items for the test refit.
    assert val_cold[test.train.item_index].any()
    for _, i in targets(test):
        assert test_cold[i]
    # Popularity has nothing on cold items; training popularity never counts them.
    pop = PopularityMethod()
    pop.fit(test)
    assert not pop.counts[test_cold].any()
    # Content that knows the items (one-hot of a hidden "taste" group) finds them; the
    # evaluator only ranks cold items.
    result = evaluate_method(pop, test, k=5)
    assert 0.0 <= result.metrics["recall@5"] <= 1.0


def test_cold_items_can_only_be_found_by_content():
    # Two taste groups; users consume items of their group. Content vectors = the group.
    rng = random.Random(2)
    records = []
    for u in range(40):
        g = u % 2
        for n in range(12):
            records.append((f"u{u}", f"g{g}-{rng.randrange(20)}", n, 1.0))
    log = InteractionLog.from_records(records)
    p = cold_items_protocol(log, share=0.2, seed=0)
    matrix = np.array([[1.0, 0.0] if k.startswith("g0") else [0.0, 1.0] for k in log.items])
    content = evaluate_method(EmbeddingMethod("c", FixedItemVectors(matrix)), p.test, k=3)
    rand = evaluate_method(RandomMethod(), p.test, k=3)
    pop = evaluate_method(PopularityMethod(), p.test, k=3)
    assert content.metrics["recall@3"] > rand.metrics["recall@3"] + 0.1
    assert content.metrics["recall@3"] > pop.metrics["recall@3"] + 0.1


# ----------------------------------------------------------------------------- leakage


@pytest.mark.parametrize(
    "make",
    [
        lambda log: leave_last_protocol(log, holdout=3),
        lambda log: global_time_protocol(log, test_share=0.2, validation_share=0.2),
        lambda log: cold_items_protocol(log, share=0.2),
    ],
    ids=["leave-last", "global-time", "cold-items"],
)
def test_held_out_interactions_never_reach_training_popularity_or_profiles(make):
    log = random_log()
    p = make(log)
    for split in (p.validation, p.test):
        held = targets(split)
        assert held and not (held & pairs_of(split.train))
        eye = np.eye(split.train.n_items, dtype=np.float32)
        profiles = user_profiles(split.train, eye, np.ones(split.train.n_items, dtype=bool))
        method = EmbeddingMethod("e", FixedItemVectors(eye))
        method.fit(split)
        counts = np.zeros(split.train.n_items)
        for _u, i in pairs_of(split.train):
            counts[i] += 1
        np.testing.assert_array_equal(method.counts, counts)
        for u, i in held:
            assert profiles[u, i] == 0.0
        for baseline in (EASEMethod(regularization=10.0), RecentItemKNNMethod(recent=2)):
            baseline.fit(split)
            seen = baseline.user_items.tocsr()
            for u, i in held:
                assert seen[u, i] == 0.0


# ----------------------------------------------------------------------------- search


class Recorder(PopularityMethod):
    """Popularity plus a fixed bonus, recording the splits it is fitted on."""

    fitted: list = []

    def __init__(self, bonus_item: int):
        super().__init__(name="rec")
        self.bonus_item = bonus_item

    def fit(self, split):
        Recorder.fitted.append(split)
        super().fit(split)
        self.counts = self.counts.copy()
        self.counts[self.bonus_item] += 1e6


def test_tune_and_test_chooses_on_validation_and_reads_test_once():
    log = random_log()
    p = leave_last_protocol(log, holdout=2)
    # The item most often in validation targets is the one a good configuration boosts.
    val_counts = np.bincount(np.concatenate(p.validation.test_items), minlength=log.n_items)
    best_item = int(np.argmax(val_counts))
    worst_item = int(np.argmin(val_counts))
    Recorder.fitted = []
    family = Family(
        "rec", lambda params: Recorder(params["item"]), [{"item": worst_item}, {"item": best_item}]
    )
    result = tune_and_test(family, p.validation, p.test, k=5)
    assert result.chosen == {"item": best_item}
    assert [s is p.validation for s in Recorder.fitted] == [True, True, False]
    assert Recorder.fitted[-1] is p.test
    assert result.validation[1][1] >= result.validation[0][1]
    assert result.test.per_user["ndcg@5"].shape == (len(p.test.test_users),)
    # Intervals against the best baseline.
    baseline = tune_and_test(
        Family("pop", lambda _: PopularityMethod(), [{}], baseline=True), p.validation, p.test, k=5
    )
    out = compare_with_best([baseline, result], "ndcg@5", samples=100)
    assert out["reference"] == "pop"
    assert set(out["methods"]) == {"rec"}
    assert out["methods"]["rec"]["low"] <= out["methods"]["rec"]["high"]


def test_similar_items_report_on_planted_pairs():
    # Users watch a then b (pairs (0,1), (2,3), ...), then one more pair as the test.
    records = []
    for u in range(30):
        for n, pair in enumerate([(u % 5) * 2, ((u + 1) % 5) * 2]):
            records.append((f"u{u}", f"i{pair}", 2 * n, 1.0))
            records.append((f"u{u}", f"i{pair + 1}", 2 * n + 1, 1.0))
    log = InteractionLog.from_records(records)
    p = leave_last_protocol(log, holdout=1, validation=1)
    knn = ItemKNNMethod(neighbors=5)
    knn.fit(p.test)
    lists = similar_lists(knn, np.arange(log.n_items), 3)
    assert all(i not in lists[i] for i in lists)
    fields = [{key[1:]} for key in log.items]
    report = similar_items_report(knn, p.test, k=3, fields=fields, famous=2)
    assert set(report) >= {"next_item_hit@3", "hub_share_top20", "popularity_ratio", "coherence"}
    assert 0.0 <= report["next_item_hit@3"] <= 1.0
    assert report["hub_share_top20"] == pytest.approx(1.0)  # 10 items: every result is a "hub"
    assert len(report["famous"]) == 2
    als = ALSMethod(factors=4, iterations=3)
    als.fit(p.test)
    assert similar_lists(als, np.array([0, 1]), 2)
    assert similar_lists(RandomMethod(), np.array([0]), 2) == {}


def test_top_k_breaks_ties_by_the_given_draws():
    from embrec.evaluation.metrics import top_k

    scores = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 1.0, 1.0]])
    draws = np.array([[0.4, 0.2, 0.9, 0.1], [0.1, 0.5, 0.8, 0.3]])
    assert top_k(scores, 2, tiebreak=draws).tolist() == [[3, 1], [1, 3]]
    assert top_k(scores, 2, [np.array([3]), np.array([1])], tiebreak=draws).tolist() == [
        [1, 0],
        [3, 2],
    ]


def test_constant_scores_get_chance_level_figures():
    # 200 items, each user's 5 held-out items: a method that scores every item the same gets
    # recall about 10/175 on average (25 training items each), whatever the catalog order.
    records = [
        (f"u{u}", f"i{(u * 13 + n * 7) % 200:03d}", n, 1.0) for u in range(300) for n in range(30)
    ]
    log = InteractionLog.from_records(records)
    split = leave_last_protocol(log, holdout=5, validation=5).test

    class Constant(PopularityMethod):
        def score(self, users):
            return np.zeros((len(users), log.n_items))

    result = evaluate_method(Constant(), split, k=10)
    assert result.metrics["recall@10"] == pytest.approx(10 / 175, abs=0.01)
    assert result.metrics["coverage@10"] > 0.9


def test_embedding_pools_are_drawn_within_the_candidates():
    # Cold candidates far from every profile still fill the list when only they may be shown.
    log = random_log()
    p = cold_items_protocol(log, share=0.2, seed=4)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(log.n_items, 8))
    method = EmbeddingMethod(
        "e", FixedItemVectors(vectors), last=3, pool=5, popularity=0.5, popular_pool=3
    )
    result = evaluate_method(method, p.test, k=5)
    assert method.candidates is p.test.candidates
    assert 0.0 <= result.metrics["recall@5"] <= 1.0
    # Every user's pool holds candidates with real scores (not the "outside the pool" floor).
    scores = method.score(p.test.test_users)
    assert (np.sum(scores[:, p.test.candidates] > -1e8, axis=1) >= 5).all()
