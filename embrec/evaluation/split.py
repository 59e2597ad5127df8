"""Interaction logs and the temporal leave-last-N-out split.

An :class:`InteractionLog` holds a site's interactions as integer-indexed numpy arrays (users,
items, timestamps, weights) plus the catalog of items that may be recommended. It is built from
plain tuples, so the same code evaluates the ``Interaction`` table of a site and any in-memory data
set.

:func:`temporal_split` holds out each user's ``holdout`` most recent *distinct* items:

* Each (user, item) pair is collapsed to one event: its time is the user's **first** interaction
  with the item, its weight the sum of the weights. Pairs whose summed weight is below
  ``min_weight`` are dropped (dislikes are not "consumption").
* A user's distinct items are ordered by ``(time, item key)``: events with the same timestamp are
  ordered by the item's key as a string, so the split never depends on the order rows were read
  in. The last ``holdout`` of them are the user's test items.
* Only users with at least ``holdout + min_train`` distinct items are evaluated; the others keep
  all their items in training.
* Every interaction of a user with a test item (including repeats) is removed from training, so a
  test item never appears in that user's training data, profile or "already seen" list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse


@dataclass
class InteractionLog:
    """Interactions as parallel arrays over integer user and item indices.

    ``users`` and ``items`` map indices back to keys (strings). ``items`` is the catalog: it may
    contain items nobody interacted with (they can still be recommended by content encoders).
    """

    users: list[str]
    items: list[str]
    user_index: np.ndarray  # int32, one per interaction
    item_index: np.ndarray  # int32
    timestamps: np.ndarray  # float64, seconds
    weights: np.ndarray  # float32

    @classmethod
    def from_records(
        cls,
        records: Iterable[tuple],
        *,
        catalog: Sequence[str] | None = None,
    ) -> InteractionLog:
        """Build a log from ``(user, item, timestamp, weight)`` tuples.

        ``timestamp`` is a number (seconds) or a ``datetime``; keys are converted to strings.
        With ``catalog`` (item keys), interactions on items outside it are dropped and the catalog
        order fixes item indices; without it the catalog is every item seen, sorted by key.
        """
        rows = [(str(u), str(i), _seconds(t), float(w)) for u, i, t, w in records]
        if catalog is None:
            items = sorted({r[1] for r in rows})
        else:
            items = [str(i) for i in dict.fromkeys(catalog)]
        item_pos = {key: n for n, key in enumerate(items)}
        rows = [r for r in rows if r[1] in item_pos]
        users = sorted({r[0] for r in rows})
        user_pos = {key: n for n, key in enumerate(users)}
        return cls(
            users=users,
            items=items,
            user_index=np.array([user_pos[r[0]] for r in rows], dtype=np.int32),
            item_index=np.array([item_pos[r[1]] for r in rows], dtype=np.int32),
            timestamps=np.array([r[2] for r in rows], dtype=np.float64),
            weights=np.array([r[3] for r in rows], dtype=np.float32),
        )

    def __len__(self) -> int:
        return int(self.user_index.shape[0])

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def subset(self, mask: np.ndarray) -> InteractionLog:
        """The same users and catalog, keeping only interactions where ``mask`` is true."""
        return InteractionLog(
            users=self.users,
            items=self.items,
            user_index=self.user_index[mask],
            item_index=self.item_index[mask],
            timestamps=self.timestamps[mask],
            weights=self.weights[mask],
        )

    def matrix(self, *, binary: bool = False) -> sparse.csr_matrix:
        """Users × items CSR matrix of summed weights (or 1 where any interaction exists)."""
        data = np.ones(len(self), dtype=np.float32) if binary else self.weights
        m = sparse.csr_matrix(
            (data, (self.user_index, self.item_index)),
            shape=(self.n_users, self.n_items),
            dtype=np.float32,
        )
        m.sum_duplicates()
        if binary:
            m.data[:] = 1.0
        return m

    def sequences(self) -> list[list[int]]:
        """Each user's item indices in time order (ties by item key), one list per user."""
        order = self.chronological_order()
        seqs: list[list[int]] = [[] for _ in range(self.n_users)]
        for pos in order:
            seqs[self.user_index[pos]].append(int(self.item_index[pos]))
        return seqs

    def chronological_order(self) -> np.ndarray:
        """Interaction positions sorted by (user, time, item key): the documented tie-break."""
        item_rank = _key_rank(self.items)[self.item_index]
        return np.lexsort((item_rank, self.timestamps, self.user_index))


@dataclass
class Split:
    """Training interactions and, per evaluated user, the held-out item indices."""

    train: InteractionLog
    test_users: np.ndarray  # user indices that are evaluated
    test_items: list[np.ndarray]  # held-out item indices, aligned with test_users
    holdout: int
    stats: dict = field(default_factory=dict)
    #: Boolean mask of the items that may be recommended (None: the whole catalog). The
    #: cold-start protocol ranks only its cold items.
    candidates: np.ndarray | None = None

    def test_pairs(self) -> set[tuple[int, int]]:
        """All held-out (user index, item index) pairs."""
        return {
            (int(u), int(i))
            for u, items in zip(self.test_users, self.test_items, strict=True)
            for i in items
        }


def temporal_split(
    log: InteractionLog,
    *,
    holdout: int = 10,
    min_train: int = 1,
    min_weight: float = 0.0,
) -> Split:
    """Hold out each user's ``holdout`` most recent distinct items (see the module docstring).

    ``min_weight``: (user, item) pairs whose summed weight is at most this value are dropped from
    both sides (default 0: only positive signals count as consumption).
    """
    if holdout < 1:
        raise ValueError("holdout must be at least 1")
    if min_train < 1:
        raise ValueError("min_train must be at least 1")
    # Collapse (user, item) pairs: first time, summed weight.
    pair = log.user_index.astype(np.int64) * max(log.n_items, 1) + log.item_index
    uniq, inverse = np.unique(pair, return_inverse=True)
    first_time = np.full(uniq.shape[0], np.inf)
    np.minimum.at(first_time, inverse, log.timestamps)
    total_weight = np.zeros(uniq.shape[0], dtype=np.float64)
    np.add.at(total_weight, inverse, log.weights)
    keep_pair = total_weight > min_weight
    pair_user = (uniq // max(log.n_items, 1)).astype(np.int64)
    pair_item = (uniq % max(log.n_items, 1)).astype(np.int64)

    item_rank = _key_rank(log.items)
    candidates = np.flatnonzero(keep_pair)
    order = candidates[
        np.lexsort(
            (item_rank[pair_item[candidates]], first_time[candidates], pair_user[candidates])
        )
    ]
    is_test_pair = np.zeros(uniq.shape[0], dtype=bool)
    test_users: list[int] = []
    test_items: list[np.ndarray] = []
    users_sorted = pair_user[order]
    bounds = np.flatnonzero(np.diff(users_sorted)) + 1
    for chunk in np.split(order, bounds) if order.size else []:
        if chunk.size < holdout + min_train:
            continue
        held = chunk[-holdout:]
        is_test_pair[held] = True
        test_users.append(int(pair_user[held[0]]))
        test_items.append(pair_item[held].astype(np.int32))

    train_mask = keep_pair[inverse] & ~is_test_pair[inverse]
    train = log.subset(train_mask)
    stats = {
        "interactions": len(log),
        "train_interactions": len(train),
        "users": log.n_users,
        "evaluated_users": len(test_users),
        "items": log.n_items,
        "test_pairs": int(is_test_pair.sum()),
    }
    return Split(
        train=train,
        test_users=np.array(test_users, dtype=np.int32),
        test_items=test_items,
        holdout=holdout,
        stats=stats,
    )


def _key_rank(keys: Sequence[str]) -> np.ndarray:
    """Rank of each key in string order (the tie-break between same-time events)."""
    order = sorted(range(len(keys)), key=lambda n: keys[n])
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys))
    return rank


def _seconds(value) -> float:
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)


# ----------------------------------------------------------------------------- three-way splits


@dataclass
class Protocol:
    """A three-way split: choose parameters on ``validation``, read ``test`` once.

    ``validation.train`` is the training part only; ``test.train`` is training *plus* validation
    (the standard refit: the chosen configuration is refitted on everything before the test
    part, as a deployed system would be). Both are :class:`Split` objects, so every method and
    metric works on either unchanged.
    """

    name: str
    validation: Split
    test: Split
    description: str = ""
    stats: dict = field(default_factory=dict)


def leave_last_protocol(
    log: InteractionLog,
    *,
    holdout: int = 10,
    validation: int | None = None,
    min_train: int = 1,
    min_weight: float = 0.0,
) -> Protocol:
    """Per-user temporal leave-last-N: each user's ``holdout`` most recent distinct items are the
    test part, the ``validation`` (default ``holdout``) items before them the validation part.

    Users need ``holdout + validation + min_train`` distinct items to be evaluated (in both
    parts); the others keep all their items in training.
    """
    validation = holdout if validation is None else validation
    if validation < 1:
        raise ValueError("validation must be at least 1")
    test = temporal_split(
        log, holdout=holdout, min_train=validation + min_train, min_weight=min_weight
    )
    val = temporal_split(test.train, holdout=validation, min_train=min_train, min_weight=min_weight)
    return Protocol(
        name="leave-last",
        validation=val,
        test=test,
        description=f"per-user temporal: last {holdout} distinct items test, "
        f"the {validation} before them validation",
        stats={"validation": val.stats, "test": test.stats},
    )


def _collapse(log: InteractionLog, min_weight: float):
    """(user, item) pairs with their first time and summed weight, as in :func:`temporal_split`."""
    n_items = max(log.n_items, 1)
    pair = log.user_index.astype(np.int64) * n_items + log.item_index
    uniq, inverse = np.unique(pair, return_inverse=True)
    first_time = np.full(uniq.shape[0], np.inf)
    np.minimum.at(first_time, inverse, log.timestamps)
    total = np.zeros(uniq.shape[0], dtype=np.float64)
    np.add.at(total, inverse, log.weights)
    return uniq // n_items, uniq % n_items, first_time, total > min_weight, inverse


def _targets_split(
    log: InteractionLog,
    train_mask: np.ndarray,
    target_pair: np.ndarray,
    pair_user: np.ndarray,
    pair_item: np.ndarray,
    order_key: np.ndarray,
    *,
    min_train: int,
    candidates: np.ndarray | None = None,
    holdout: int = 0,
) -> Split:
    """A :class:`Split` whose training part is ``log[train_mask]`` and whose held-out items are
    the ``target_pair`` pairs of users with at least ``min_train`` distinct training items."""
    train = log.subset(train_mask)
    train_count = np.zeros(log.n_users, dtype=np.int64)
    if len(train):
        seen = np.unique(train.user_index.astype(np.int64) * max(log.n_items, 1) + train.item_index)
        np.add.at(train_count, (seen // max(log.n_items, 1)).astype(np.int64), 1)
    chosen = np.flatnonzero(target_pair)
    chosen = chosen[np.lexsort((order_key[chosen], pair_user[chosen]))]
    test_users: list[int] = []
    test_items: list[np.ndarray] = []
    no_history = 0
    if chosen.size:
        bounds = np.flatnonzero(np.diff(pair_user[chosen])) + 1
        for chunk in np.split(chosen, bounds):
            user = int(pair_user[chunk[0]])
            if train_count[user] < min_train:
                no_history += 1
                continue
            test_users.append(user)
            test_items.append(pair_item[chunk].astype(np.int32))
    stats = {
        "interactions": len(log),
        "train_interactions": len(train),
        "users": log.n_users,
        "evaluated_users": len(test_users),
        "users_without_history": no_history,
        "items": log.n_items,
        "test_pairs": int(sum(len(t) for t in test_items)),
    }
    return Split(
        train=train,
        test_users=np.array(test_users, dtype=np.int32),
        test_items=test_items,
        holdout=holdout,
        stats=stats,
        candidates=candidates,
    )


def global_time_protocol(
    log: InteractionLog,
    *,
    test_share: float = 0.1,
    validation_share: float = 0.1,
    min_train: int = 1,
    min_weight: float = 0.0,
) -> Protocol:
    """Global temporal cut-off: what a deployed system faces.

    Interactions are ordered by time; the latest ``test_share`` of them start the test period and
    the ``validation_share`` before it the validation period (cut-off times are quantiles of the
    timestamps). Validation: train on everything before the validation cut-off, targets are
    the items each user first consumed in the validation period. Test: train on everything
    before the test cut-off, targets are the items first consumed from then on. Items a user
    already had before a cut-off are not targets (repeats), and *every* interaction at or after a
    cut-off is removed from that split's training part.

    Users with no training history (fewer than ``min_train`` distinct training items) are not
    evaluated — no personal method can score them; they are counted as
    ``users_without_history`` in the split's stats.
    """
    if not (0 < test_share < 1 and 0 < validation_share < 1 and test_share + validation_share < 1):
        raise ValueError("test_share and validation_share must be in (0, 1) and sum below 1")
    if len(log) == 0:
        raise ValueError("no interactions")
    times = np.sort(log.timestamps)
    test_cut = float(times[int(np.floor(len(times) * (1 - test_share)))])
    val_cut = float(times[int(np.floor(len(times) * (1 - test_share - validation_share)))])
    if not val_cut < test_cut:
        raise ValueError("the validation and test periods start at the same time; widen them")
    pair_user, pair_item, first_time, positive, inverse = _collapse(log, min_weight)
    item_rank = _key_rank(log.items)[pair_item]
    order_key = np.lexsort((item_rank, first_time)).argsort()

    def make(cut: float, end: float) -> Split:
        train_mask = (log.timestamps < cut) & positive[inverse]
        target = positive & (first_time >= cut) & (first_time < end)
        split = _targets_split(
            log, train_mask, target, pair_user, pair_item, order_key, min_train=min_train
        )
        split.stats["cut_off"] = cut
        return split

    val = make(val_cut, test_cut)
    test = make(test_cut, np.inf)
    return Protocol(
        name="global-time",
        validation=val,
        test=test,
        description=f"global time cut-off: last {test_share:.0%} of interactions test, the "
        f"{validation_share:.0%} before validation",
        stats={"validation": val.stats, "test": test.stats},
    )


def cold_items_protocol(
    log: InteractionLog,
    *,
    share: float = 0.1,
    seed: int = 0,
    min_train: int = 1,
    min_weight: float = 0.0,
) -> Protocol:
    """Cold-start items: a random ``share`` of the items with interactions are cold for test,
    another ``share`` for validation; *all* their interactions leave training.

    Validation trains without either cold set; test trains without the test cold items only
    (training + validation). A user's targets are their cold items of that part, and only cold
    items of that part compete in the ranking (``split.candidates``), so the figures say how well
    a method ranks items nobody has interacted with: collaborative methods cannot (their scores
    for such items are constant), content can.
    """
    if not 0 < share < 0.5:
        raise ValueError("share must be in (0, 0.5)")
    pair_user, pair_item, first_time, positive, inverse = _collapse(log, min_weight)
    used = np.unique(pair_item[positive])
    rng = np.random.default_rng(seed)
    n_cold = max(1, int(round(share * used.size)))
    if 2 * n_cold > used.size:
        raise ValueError("too few items with interactions for two cold sets")
    picked = rng.permutation(used)
    test_cold = np.zeros(log.n_items, dtype=bool)
    val_cold = np.zeros(log.n_items, dtype=bool)
    test_cold[picked[:n_cold]] = True
    val_cold[picked[n_cold : 2 * n_cold]] = True
    item_rank = _key_rank(log.items)[pair_item]
    order_key = np.lexsort((item_rank, first_time)).argsort()
    ok = positive[inverse]

    def make(cold: np.ndarray, also_out: np.ndarray) -> Split:
        train_mask = ok & ~cold[log.item_index] & ~also_out[log.item_index]
        target = positive & cold[pair_item]
        split = _targets_split(
            log,
            train_mask,
            target,
            pair_user,
            pair_item,
            order_key,
            min_train=min_train,
            candidates=cold.copy(),
        )
        split.stats["cold_items"] = int(cold.sum())
        return split

    val = make(val_cold, test_cold)
    test = make(test_cold, np.zeros(log.n_items, dtype=bool))
    return Protocol(
        name="cold-items",
        validation=val,
        test=test,
        description=f"cold-start items: {n_cold} random items ({share:.0%} of those with "
        "interactions) with all interactions held out; ranked among the cold items",
        stats={"validation": val.stats, "test": test.stats},
    )
