"""The moderation join and its window counts, over plain stores (no broker, no RocksDB)."""

import random

import msgspec
import pytest
from test_processor_channel import MIN, T0, DictStore, TxStore, msg

from chatpulse.models import ChatEvent
from chatpulse.processor.aggregate import WindowAggregate
from chatpulse.processor.channel import ChannelCounter, ModerationUpdate
from chatpulse.processor.moderation import MAX_ACTIONS, Actions, JoinIndex, Target

HORIZON = 10 * MIN


def counter(horizon: int = HORIZON, sizes: tuple[int, ...] = (MIN,)) -> ChannelCounter:
    return ChannelCounter(
        list(sizes), grace_ms=5_000, dedup_horizon_ms=3_600_000, join_horizon_ms=horizon
    )


def deleted(target: str, sent_at: int, eid: str = "") -> ChatEvent:
    return ChatEvent(
        type="message_deleted",
        channel="c",
        sent_at=sent_at,
        id=eid or f"clearmsg:{target}",
        target_msg_id=target,
    )


def cleared(kind: str, sent_at: int, user: str = "") -> ChatEvent:
    return ChatEvent(
        type=kind,
        channel="c",
        sent_at=sent_at,
        id=f"clearchat:{sent_at}:{user}",
        user_id=user,
        user_login=f"u{user}" if user else "",
        duration_s=600 if kind == "timeout" else None,
    )


def moderate(c: ChannelCounter, event: ChatEvent, store: object) -> ModerationUpdate:
    update = c.moderate(event, store)  # type: ignore[arg-type]
    assert update is not None
    return update


def test_a_clearmsg_after_its_message_marks_it_and_counts_in_its_window() -> None:
    c, store = counter(), DictStore()
    c.process(msg("a", T0 + 1_000, user="7"), store)
    c.process(msg("b", T0 + 2_000, user="8"), store)
    update = moderate(c, deleted("a", T0 + 3_000), store)
    assert update.marks == [Target("a", T0 + 1_000, "7", "u7")]
    assert not update.unmatched
    (window,) = update.open_windows.values()
    assert (window.messages, window.deleted_messages, window.timeouts, window.bans) == (2, 1, 0, 0)


def test_a_clearmsg_read_before_its_message_marks_the_message_when_it_comes() -> None:
    c, store = counter(), DictStore()
    c.process(msg("x", T0 + 500), store)
    update = moderate(c, deleted("a", T0 + 3_000), store)
    assert (update.marks, update.unmatched) == ([], True)
    assert c.unmatched.value == 1
    late_message = c.process(msg("a", T0 + 1_000, user="7"), store)
    other = c.process(msg("b", T0 + 1_500, user="7"), store)
    assert late_message is not None
    assert late_message.deleted
    assert other is not None
    assert not other.deleted


def test_a_ban_or_timeout_marks_the_users_messages_up_to_it_in_either_order() -> None:
    c, store = counter(), DictStore()
    c.process(msg("a", T0 + 1_000, user="7"), store)
    c.process(msg("b", T0 + 2_000, user="8"), store)
    c.process(msg("c", T0 + 3_000, user="7"), store)
    ban = moderate(c, cleared("ban", T0 + 3_000, user="7"), store)
    assert sorted(t.id for t in ban.marks) == ["a", "c"]
    # read after the ban: sent before it (deleted) and after it (kept)
    before = c.process(msg("d", T0 + 2_500, user="7"), store)
    after = c.process(msg("e", T0 + 3_001, user="7"), store)
    assert before is not None
    assert before.deleted
    assert after is not None
    assert not after.deleted
    timeout = moderate(c, cleared("timeout", T0 + 4_000, user="8"), store)
    assert [t.id for t in timeout.marks] == ["b"]
    (window,) = timeout.open_windows.values()
    assert (window.deleted_messages, window.timeouts, window.bans) == (0, 1, 1)


def test_a_clear_marks_every_message_up_to_it() -> None:
    c, store = counter(), DictStore()
    for i in range(5):
        c.process(msg(f"m{i}", T0 + i * 1_000, user=str(i)), store)
    update = moderate(c, cleared("clear", T0 + 2_000), store)
    assert sorted(t.id for t in update.marks) == ["m0", "m1", "m2"]
    (window,) = update.open_windows.values()
    assert (window.deleted_messages, window.timeouts, window.bans) == (0, 0, 0)
    assert c.process(msg("late", T0 + 1_500, user="9"), store).deleted  # type: ignore[union-attr]


def test_a_target_older_than_the_horizon_is_not_found_but_the_event_counts() -> None:
    c, store = counter(horizon=2 * MIN, sizes=(MIN, 10 * MIN)), DictStore()
    c.process(msg("old", T0 + 1_000, user="7"), store)
    for i in range(1, 6):  # the channel moves on 5 minutes: "old" leaves the horizon
        c.process(msg(f"m{i}", T0 + i * MIN, user="8"), store)
    update = moderate(c, deleted("old", T0 + 5 * MIN + 1), store)
    assert (update.marks, update.unmatched) == ([], True)
    ban = moderate(c, cleared("ban", T0 + 5 * MIN + 2, user="7"), store)
    assert ban.marks == []
    ten = ban.open_windows[(10 * MIN, T0)]
    assert (ten.deleted_messages, ten.bans) == (1, 1)
    c.flush()
    # the join's buckets of the first minutes are gone from the state
    assert all(
        int.from_bytes(k[1:9], "big") * 1_000 >= T0 + 2 * MIN for k in store.data if k[:1] == b"j"
    )


def test_an_event_for_a_closed_window_is_late_and_a_duplicate_is_dropped() -> None:
    c, store = counter(), DictStore()
    c.process(msg("a", T0 + 1_000), store)
    c.process(msg("b", T0 + MIN + 6_000), store)  # closes the first minute
    late = moderate(c, deleted("a", T0 + 2_000), store)
    assert late.late_sizes == [MIN]
    assert late.marks == [Target("a", T0 + 1_000, "1", "u1")]  # still joined and marked
    assert c.moderate(deleted("a", T0 + 2_000), store) is None  # same event id again
    other = ChatEvent(type="subscription", channel="c", sent_at=T0 + 2, id="s1")
    assert c.moderate(other, store) is None  # not a moderation event


def test_events_do_not_move_the_channel_time_nor_make_totals() -> None:
    c, store = counter(), DictStore()
    update = moderate(c, cleared("timeout", T0 + 30 * MIN, user="3"), store)
    assert update.late_sizes == []
    first = c.process(msg("a", T0 + 1_000), store)
    assert first is not None
    assert (first.total_messages, first.first_seen, first.last_seen) == (1, T0 + 1_000, T0 + 1_000)
    assert first.closed == []  # the event's window far ahead closed nothing
    assert {start for (_, start) in first.open_windows} == {T0, T0 + 30 * MIN}


def test_the_join_and_the_counts_survive_a_restart_from_the_state() -> None:
    store = TxStore()
    first = counter()
    first.process(msg("a", T0 + 1_000, user="7"), store)
    first.process(msg("b", T0 + 2_000, user="8"), store)
    moderate(first, deleted("zz", T0 + 2_500), store)  # pending: its message comes later
    moderate(first, cleared("ban", T0 + 2_600, user="9"), store)
    first.flush()
    store.commit()
    again = counter()  # a new process: nothing in memory
    update = moderate(again, cleared("timeout", T0 + 3_000, user="7"), store)
    assert [t.id for t in update.marks] == ["a"]
    (window,) = update.open_windows.values()
    assert (window.messages, window.deleted_messages, window.timeouts, window.bans) == (2, 1, 1, 1)
    pending = again.process(msg("zz", T0 + 2_000, user="5"), store)
    banned = again.process(msg("q", T0 + 2_100, user="9"), store)
    assert pending is not None
    assert pending.deleted
    assert banned is not None
    assert banned.deleted


def test_a_rewound_checkpoint_joins_and_counts_once_when_processed_again() -> None:
    store = TxStore()
    c = counter()
    c.process(msg("a", T0 + 1_000, user="7"), store)
    c.flush()
    store.commit()
    moderate(c, deleted("a", T0 + 2_000), store)
    c.discard()  # the checkpoint is dropped ...
    store.abort()
    again = moderate(c, deleted("a", T0 + 2_000), store)  # ... and processed again
    assert [t.id for t in again.marks] == ["a"]
    (window,) = again.open_windows.values()
    assert window.deleted_messages == 1


def test_a_record_of_the_layout_before_moderation_is_read() -> None:
    aggregate = WindowAggregate(messages=3)
    older = msgspec.msgpack.encode((3, T0, T0 + 5, [(MIN, T0, aggregate.to_tuple(), [])]))
    store = DictStore()
    store.data[b"c"] = older
    update = moderate(counter(), deleted("a", T0 + 10), store)
    (window,) = update.open_windows.values()
    assert (window.messages, window.deleted_messages) == (3, 1)


def _reference(records: list[object]) -> tuple[dict[str, bool], dict[tuple[int, str], int]]:
    """What the join must give in any order of the two streams: a message is deleted by a
    CLEARMSG of its id, a timeout/ban of its user at or after it, a clear at or after it;
    events count in the window of their time."""
    messages = [r for r in records if not isinstance(r, ChatEvent)]
    events = [r for r in records if isinstance(r, ChatEvent)]
    marked = {}
    for m in messages:
        marked[m.id] = any(  # type: ignore[attr-defined]
            (e.type == "message_deleted" and e.target_msg_id == m.id)  # type: ignore[attr-defined]
            or (e.type in ("timeout", "ban") and e.user_id == m.user_id and e.sent_at >= m.sent_at)  # type: ignore[attr-defined]
            or (e.type == "clear" and e.sent_at >= m.sent_at)  # type: ignore[attr-defined]
            for e in events
        )
    counts: dict[tuple[int, str], int] = {}
    for e in events:
        key = (e.sent_at - e.sent_at % MIN, e.type)
        counts[key] = counts.get(key, 0) + 1
    return marked, counts


@pytest.mark.parametrize("seed", range(8))
def test_random_interleavings_give_the_same_marks_and_counts(seed: int) -> None:
    rng = random.Random(seed)
    messages = [msg(f"m{i}", T0 + i * 100, user=str(rng.randint(1, 6))) for i in range(300)]
    events: list[ChatEvent] = []
    for i, m in enumerate(messages):
        roll = rng.random()
        at = m.sent_at + rng.randint(1, 3_000)
        if roll < 0.05:
            events.append(deleted(m.id, at))
        elif roll < 0.08:
            events.append(cleared(rng.choice(["timeout", "ban"]), at, user=m.user_id))
        elif roll < 0.085:
            events.append(cleared("clear", at))
        del i
    # two streams read side by side: each in its own order, interleaved at random
    merged: list[object] = []
    a, b = list(messages), sorted(events, key=lambda e: e.sent_at)
    while a or b:
        take = a if (a and (not b or rng.random() < 0.8)) else b
        merged.append(take.pop(0))
    marked_expected, counts_expected = _reference(merged)
    c, store = counter(sizes=(MIN,)), DictStore()
    marked: dict[str, bool] = {m.id: False for m in messages}
    for record in merged:
        if isinstance(record, ChatEvent):
            update = moderate(c, record, store)
            assert update.late_sizes == []
            for target in update.marks:
                marked[target.id] = True
        else:
            message_update = c.process(record, store)  # type: ignore[arg-type]
            assert message_update is not None
            marked[record.id] = marked[record.id] or message_update.deleted  # type: ignore[attr-defined]
        if rng.random() < 0.05:
            c.flush()
    assert marked == marked_expected
    counts: dict[tuple[int, str], int] = {}
    for (_, start), agg in c._working[(0, "c")].record.windows.items():  # type: ignore[union-attr]
        for name, value in (
            ("message_deleted", agg.deleted_messages),
            ("timeout", agg.timeouts),
            ("ban", agg.bans),
        ):
            if value:
                counts[(start, name)] = value
    assert counts == {k: v for k, v in counts_expected.items() if k[1] != "clear"}


def test_join_index_and_actions_are_bounded_and_expire() -> None:
    index = JoinIndex()
    index.add(Target("a", 1, "7", "u7"), bucket=0)
    index.add(Target("b", 2, "7", "u7"), bucket=1)
    index.add(Target("a", 1, "7", "u7"), bucket=0)  # twice: kept once
    assert [t.id for t in index.of_user("7", until=5)] == ["a", "b"]
    index.expire([0])
    assert list(index.by_id) == ["b"]
    assert [t.id for t in index.of_user("7", until=5)] == ["b"]
    actions = Actions()
    for i in range(MAX_ACTIONS + 5):
        actions.add(i, "u", str(i))
    assert len(actions.items) == MAX_ACTIONS * 9 // 10 + 4
    assert actions.items[0][0] == MAX_ACTIONS // 10 + 1  # the oldest tenth went
    assert actions.deletes(msg("x", MAX_ACTIONS // 10 + 1, user=str(MAX_ACTIONS // 10 + 1)))
    assert not actions.deletes(msg("x", MAX_ACTIONS // 10, user=str(MAX_ACTIONS // 10)))
    assert actions.prune(MAX_ACTIONS)
    assert Actions.decode(actions.encode()).items == actions.items
