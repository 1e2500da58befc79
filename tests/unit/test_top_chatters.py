"""The Space-Saving summary of a window's chatters: exact within capacity, bounded past it,
the same after a restore from its stored form."""

import random
from collections import Counter

from chatpulse.processor.topchatters import TopChatters


def _stream(seed: int, messages: int, users: int) -> list[str]:
    rng = random.Random(seed)
    # a few heavy chatters and a long tail of one-message ones, as in a big chat
    heavy = [str(rng.randint(1, 1_200_000_000)) for _ in range(5)]
    return [
        rng.choice(heavy) if rng.random() < 0.3 else str(rng.randint(1, users))
        for _ in range(messages)
    ]


def test_within_capacity_every_count_is_exact_and_ties_go_by_login() -> None:
    users = _stream(1, 5_000, 300)
    summary = TopChatters()
    for user in users:
        summary.add(user, f"user{user}", capacity=400)
    truth = Counter(users)
    assert summary.counts == dict(truth)
    assert summary.exact
    ranked = sorted(truth.items(), key=lambda item: (-item[1], f"user{item[0]}"))[:10]
    assert [(c.login, c.count) for c in summary.top()] == [(f"user{u}", n) for u, n in ranked]


def test_past_capacity_counts_stay_within_the_bound_and_heavy_chatters_are_kept() -> None:
    users = _stream(2, 20_000, 1_200_000_000)
    capacity = 100
    summary = TopChatters()
    for user in users:
        summary.add(user, f"user{user}", capacity=capacity)
    truth = Counter(users)
    assert len(summary.counts) == capacity
    assert not summary.exact
    bound = len(users) / capacity
    for user, count in summary.counts.items():
        error = summary.errors.get(user, 0)
        assert truth[user] <= count <= truth[user] + bound
        assert count - error <= truth[user]
    for user, count in truth.items():
        if count > bound:
            assert user in summary.counts
    # the five heavy chatters are the top five, with counts within the bound
    top = summary.top(5)
    heavy = [user for user, _ in truth.most_common(5)]
    assert sorted(c.login for c in top) == sorted(f"user{u}" for u in heavy)


def test_a_restored_summary_goes_on_exactly_as_one_that_never_stopped() -> None:
    users = _stream(3, 8_000, 50_000)
    whole = TopChatters()
    for user in users:
        whole.add(user, f"user{user}", capacity=64)
    rng = random.Random(3)
    pieces = TopChatters()
    restored = 0
    for user in users:
        if rng.random() < 0.01:  # a checkpoint: stored, read back (no heap), counted on
            pieces = TopChatters.from_tuple(pieces.to_tuple())
            restored += 1
        pieces.add(user, f"user{user}", capacity=64)
    assert pieces.counts == whole.counts
    assert pieces.errors == whole.errors
    assert pieces.top() == whole.top()
    assert restored > 50


def test_the_smallest_count_then_user_id_is_replaced() -> None:
    summary = TopChatters()
    for user in ["b", "b", "a", "c"]:
        summary.add(user, user, capacity=3)
    summary.add("d", "d", capacity=3)  # a and c have 1: a (smaller id) goes, d takes 1 + 1
    assert summary.counts == {"b": 2, "c": 1, "d": 2}
    assert summary.errors == {"d": 1}
    summary.add("e", "e", capacity=3)  # c goes
    assert summary.counts == {"b": 2, "d": 2, "e": 2}
    summary.add("f", "f", capacity=2)  # a smaller capacity: the smallest go first
    assert summary.counts == {"e": 2, "f": 3}
    assert [(c.login, c.count) for c in summary.top()] == [("f", 3), ("e", 2)]


def test_a_new_login_of_a_counted_user_is_shown() -> None:
    summary = TopChatters()
    summary.add("42", "oldname", capacity=10)
    summary.add("42", "newname", capacity=10)
    assert [(c.login, c.count) for c in summary.top()] == [("newname", 2)]
