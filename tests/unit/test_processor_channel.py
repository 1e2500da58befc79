"""The per-channel counting logic over a plain dict store (no broker, no RocksDB)."""

import random
import struct
from array import array
from collections import Counter, defaultdict

import msgspec
import pytest

from chatpulse.models import ChatMessage, Emote
from chatpulse.processor.aggregate import (
    MAX_OTHER_CHATTER_ID,
    MAX_OTHER_CHATTERS,
    UNTRACKED_CHATTER,
    AggregateTuple,
    WindowAggregate,
    numeric_user_id,
    top_emotes,
)
from chatpulse.processor.channel import DEFAULT_CHUNK_BYTES, ChannelCounter, ChannelUpdate

MIN_CHUNK_BYTES = 16_448

MIN = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (60 * MIN)  # an hour boundary


def round_trip(aggregate: WindowAggregate) -> WindowAggregate:
    """Through msgpack, as the channel's state record stores it."""
    data = msgspec.msgpack.encode(aggregate.to_tuple())
    return WindowAggregate.from_tuple(msgspec.msgpack.decode(data, type=AggregateTuple))


class DictStore:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get_bytes(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def set_bytes(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)


class TxStore:
    """A state with transactions, like Quix's: writes stay in the open transaction until
    ``commit``; ``abort`` drops them. Each transaction is a new ``_transaction`` object."""

    def __init__(self) -> None:
        self.committed: dict[bytes, bytes] = {}
        self.begin()

    def begin(self) -> None:
        self._transaction = object()
        self.updates: dict[bytes, bytes | None] = {}

    def commit(self) -> None:
        for key, value in self.updates.items():
            if value is None:
                self.committed.pop(key, None)
            else:
                self.committed[key] = value
        self.begin()

    def abort(self) -> None:
        self.begin()

    def get_bytes(self, key: bytes) -> bytes | None:
        if key in self.updates:
            return self.updates[key]
        value = self.committed.get(key)
        return None if value is None else bytes(bytearray(value))  # a new object, like RocksDB

    def set_bytes(self, key: bytes, value: bytes) -> None:
        self.updates[key] = value

    def delete(self, key: bytes) -> None:
        self.updates[key] = None


def msg(mid: str, sent_at: int, user: str = "1", text: str = "hi", emotes=()) -> ChatMessage:
    return ChatMessage(
        id=mid,
        channel="c",
        user_id=user,
        user_login=f"u{user}",
        text=text,
        sent_at=sent_at,
        emotes=list(emotes),
    )


def test_duplicates_count_once_and_totals() -> None:
    counter = ChannelCounter([MIN], grace_ms=5_000, dedup_horizon_ms=3_600_000)
    store = DictStore()
    first = counter.process(msg("a", T0 + 10), store)
    assert first is not None
    assert (first.total_messages, first.first_seen, first.last_seen) == (1, T0 + 10, T0 + 10)
    assert counter.process(msg("a", T0 + 10), store) is None
    second = counter.process(msg("b", T0 + 5), store)
    assert second is not None
    assert (second.total_messages, second.first_seen, second.last_seen) == (2, T0 + 5, T0 + 10)
    assert counter.process(msg("b", T0 + 5), store) is None


def test_dedup_switched_off_counts_a_repeated_id_every_time_and_keeps_no_ids() -> None:
    counter = ChannelCounter([MIN], grace_ms=5_000, dedup_horizon_ms=3_600_000, dedup=False)
    store = DictStore()
    totals = [counter.process(msg("a", T0 + 10), store) for _ in range(3)]
    assert [update.total_messages for update in totals if update is not None] == [1, 2, 3]
    assert [agg.messages for _, _, agg in totals[-1].windows] == [3]  # type: ignore[union-attr]
    counter.flush()
    assert [key for key in store.data if key[:1] in (b"b", b"d")] == []


def test_window_closes_after_grace_and_late_messages_count_only_in_totals() -> None:
    counter = ChannelCounter([MIN, 10 * MIN], grace_ms=5_000, dedup_horizon_ms=3_600_000)
    store = DictStore()
    counter.process(msg("a", T0 + 1_000, user="1"), store)
    counter.process(msg("b", T0 + 2_000, user="2"), store)
    # within grace: the first minute is still open
    in_grace = counter.process(msg("c", T0 + MIN + 4_000, user="1"), store)
    assert in_grace is not None
    assert not in_grace.closed
    out_of_order = counter.process(msg("d", T0 + 59_000, user="3"), store)
    assert out_of_order is not None
    assert not out_of_order.late_sizes
    closing = counter.process(msg("e", T0 + MIN + 5_000, user="1"), store)
    assert closing is not None
    assert [(w.window, w.window_start, w.messages, w.unique_chatters) for w in closing.closed] == [
        ("1m", T0, 3, 3)
    ]
    late = counter.process(msg("f", T0 + 30_000, user="9"), store)
    assert late is not None
    assert late.late_sizes == [MIN]
    assert [(size, start, agg.messages) for size, start, agg in late.windows] == [(10 * MIN, T0, 6)]
    assert late.total_messages == 6
    assert late.first_seen == T0 + 1_000


def test_top_emotes_names_and_ties() -> None:
    counts = {"25": (3, "Kappa"), "1": (3, "Smile"), "9": (5, "Pog"), "7": (1, "x")}
    assert [(e.id, e.name, e.count) for e in top_emotes(counts, limit=3)] == [
        ("9", "Pog", 5),
        ("1", "Smile", 3),
        ("25", "Kappa", 3),
    ]
    aggregate = WindowAggregate()
    aggregate.add(
        msg("a", T0, text="Kappa Kappa hi", emotes=[Emote("25", 0, 4), Emote("25", 6, 10)]),
        None,
    )
    assert round_trip(aggregate).emotes == {"25": (2, "Kappa")}


def test_chatters_exact_with_non_numeric_ids() -> None:
    assert numeric_user_id("123") == 123
    for odd in ("0123", "-1", "abc", str(2**32), "١٢"):
        assert numeric_user_id(odd) is None
    aggregate = WindowAggregate()
    for user in ("1", "2", "1", "0123", "abc", "abc", str(2**40)):
        aggregate.add(msg("x", T0, user=user), numeric_user_id(user))
    decoded = round_trip(aggregate)
    assert decoded.unique_chatters == 5
    assert decoded.messages == 7


def test_dedup_horizon_is_bounded() -> None:
    horizon = 10_000
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=horizon)
    store = DictStore()
    for i in range(100):
        counter.process(msg(f"m{i}", T0 + i * 1_000), store)
        counter.flush()
    dedup_keys = [key for key in store.data if key.startswith(b"d")]
    assert len(dedup_keys) <= horizon // 1_000 + 2
    assert counter.process(msg("m99", T0 + 99_000), store) is None


def test_id_with_separator_is_still_deduplicated() -> None:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN)
    store = DictStore()
    assert counter.process(msg("a\nb", T0), store) is not None
    assert counter.process(msg("a\nb", T0), store) is None
    assert counter.process(msg("a", T0), store) is not None
    assert counter.process(msg("b", T0), store) is not None


def _reference(
    messages: list[ChatMessage], sizes: list[int], grace: int
) -> tuple[dict, tuple[int, int, int]]:
    """An independent model: per window the set of users, the emote counter and the count."""
    seen: set[str] = set()
    latest = None
    windows: dict = defaultdict(lambda: [0, set(), Counter(), []])
    total, first, last = 0, None, None
    for m in messages:
        if m.id in seen:
            continue
        seen.add(m.id)
        latest = m.sent_at if latest is None else max(latest, m.sent_at)
        total += 1
        first = m.sent_at if first is None else min(first, m.sent_at)
        last = latest
        for size in sizes:
            start = m.sent_at // size * size
            if start + size + grace <= latest:
                continue
            w = windows[(size, start)]
            w[0] += 1
            w[1].add(m.user_id)
            w[3].append(m.user_id)  # chatters in the order counted
            for e in m.emotes:
                w[2][e.id] += 1
    return dict(windows), (total, first, last)


def naive_top_chatters(users: list[str], capacity: int, limit: int = 10) -> list[tuple[str, int]]:
    """Space-Saving written the plain way (a scan for the smallest counter), as the spec says:
    a new chatter when full replaces the one with the smallest (count, user id)."""
    counts: dict[str, int] = {}
    for user in users:
        if user in counts:
            counts[user] += 1
        elif len(counts) < capacity:
            counts[user] = 1
        else:
            victim = min(counts, key=lambda key: (counts[key], key))
            counts[user] = counts.pop(victim) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], f"u{item[0]}", item[0]))
    return [(f"u{user}", count) for user, count in ranked[:limit]]


def test_random_stream_matches_reference_model() -> None:
    rng = random.Random(7)
    sizes, grace = [MIN, 10 * MIN], 3_000
    stream: list[ChatMessage] = []
    now = T0
    for i in range(3_000):
        now += rng.randint(0, 800)
        sent = now - rng.randint(0, 2_500) if rng.random() < 0.2 else now
        if rng.random() < 0.01:
            sent = now - rng.randint(2 * MIN, 3 * MIN)  # late
        emotes = [Emote(str(rng.randint(1, 15)), 0, 1) for _ in range(rng.randint(0, 3))]
        m = msg(f"id{i}", sent, user=str(rng.randint(1, 40)), emotes=emotes)
        stream.append(m)
        if rng.random() < 0.05:
            stream.append(m)  # redelivery
    counter = ChannelCounter(sizes, grace_ms=grace, dedup_horizon_ms=3_600_000)
    store = DictStore()
    final: dict[tuple[int, int], tuple[int, int, dict[str, int]]] = {}
    updates: list[ChannelUpdate] = []
    for m in stream:
        update = counter.process(m, store)
        if update is None:
            continue
        updates.append(update)
        for size, start, agg in update.windows:
            final[(size, start)] = (
                agg.messages,
                agg.unique_chatters,
                {k: c for k, (c, _) in agg.emotes.items()},
            )
        for w in update.closed:
            size = w.window_end - w.window_start
            assert final[(size, w.window_start)][:2] == (w.messages, w.unique_chatters)
    expected, totals = _reference(stream, sizes, grace)
    assert {k: (v[0], len(v[1]), dict(v[2])) for k, v in expected.items()} == final
    last = updates[-1]
    assert (last.total_messages, last.first_seen, last.last_seen) == totals
    assert sum(1 for u in updates if u.late_sizes) > 0


def _stored_totals(store: TxStore) -> tuple[int, int, int]:
    total, first, last, _windows = msgspec.msgpack.decode(store.committed[b"c"])
    return total, first, last


def test_state_is_written_back_at_flush_only() -> None:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN)
    store = TxStore()
    for i in range(3):
        assert counter.process(msg(f"m{i}", T0 + i), store) is not None
    assert store.updates == {}
    assert counter.flush() == 1
    store.commit()
    assert _stored_totals(store) == (3, T0, T0 + 2)
    assert store.committed[b"b"] == array("q", [T0 // 1_000]).tobytes()
    assert store.committed[b"d" + struct.pack(">q", T0 // 1_000)].split(b"\n")[1:-1] != []
    assert counter.flush() == 0  # nothing changed since


def test_a_rewound_checkpoint_is_counted_once_when_processed_again() -> None:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN)
    store = TxStore()
    batch1 = [msg(f"a{i}", T0 + i, user=str(i)) for i in range(3)]
    batch2 = [msg(f"b{i}", T0 + 10 + i, user=str(10 + i)) for i in range(2)]
    for m in batch1:
        counter.process(m, store)
    counter.flush()
    store.commit()
    # checkpoint 2 is flushed into its transaction, then dropped (sink backpressure)
    for m in batch2:
        counter.process(m, store)
    counter.flush()
    store.abort()
    # and processed again from its first offset
    updates = [counter.process(m, store) for m in batch2]
    assert [u.total_messages for u in updates if u is not None] == [4, 5]
    counter.flush()
    store.commit()
    assert _stored_totals(store)[0] == 5


def test_an_aborted_checkpoint_that_was_never_flushed_is_forgotten() -> None:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN)
    store = TxStore()
    counter.process(msg("a", T0), store)
    counter.flush()
    store.commit()
    counter.process(msg("b", T0 + 1), store)
    store.abort()  # a bounded revoke gave up before the flush
    again = counter.process(msg("b", T0 + 1), store)
    assert again is not None
    assert again.total_messages == 2
    assert counter.process(msg("a", T0), store) is None  # the committed bucket still holds a


def test_discard_forgets_unflushed_changes() -> None:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN)
    store = TxStore()
    counter.process(msg("a", T0), store)
    counter.discard()
    assert counter.flush() == 0
    update = counter.process(msg("a", T0), store)
    assert update is not None
    assert update.total_messages == 1


@pytest.mark.parametrize(
    ("users", "chunk_bytes", "capacity"),
    [(60, DEFAULT_CHUNK_BYTES, 1_000), (1_200_000_000, MIN_CHUNK_BYTES, 1_000), (300, 16_448, 40)],
    ids=["small-audience-inline", "large-audience-chunked", "top-chatters-past-capacity"],
)
def test_random_checkpoints_rewinds_and_replays_match_the_reference(
    users: int, chunk_bytes: int, capacity: int
) -> None:
    """Checkpoints commit or roll back at random; every message counts exactly once, and the
    top chatters are what an uninterrupted Space-Saving gives (exact within capacity)."""
    rng = random.Random(11)
    sizes, grace = [MIN, 10 * MIN], 3_000
    stream: list[ChatMessage] = []
    now = T0
    for i in range(4_000):
        now += rng.randint(0, 900)
        sent = now - rng.randint(0, 2_500) if rng.random() < 0.2 else now
        emotes = [Emote(str(rng.randint(1, 9)), 0, 1) for _ in range(rng.randint(0, 2))]
        m = msg(f"id{i}", sent, user=str(rng.randint(1, users)), emotes=emotes)
        stream.append(m)
        if rng.random() < 0.05:
            stream.append(m)
    counter = ChannelCounter(
        sizes,
        grace_ms=grace,
        dedup_horizon_ms=3_600_000,
        chunk_bytes=chunk_bytes,
        top_capacity=capacity,
    )
    store = TxStore()
    final: dict[tuple[int, int], tuple[int, int, list[tuple[str, int]]]] = {}
    committed_final: dict[tuple[int, int], tuple[int, int, list[tuple[str, int]]]] = {}
    position = 0
    last_total = 0
    while position < len(stream):
        batch = stream[position : position + rng.randint(1, 200)]
        for m in batch:
            update = counter.process(m, store)
            if update is None:
                continue
            last_total = update.total_messages
            for size, start, agg in update.windows:
                top = [(c.login, c.count) for c in agg.talkers.top()]
                final[(size, start)] = (agg.messages, agg.unique_chatters, top)
        outcome = rng.random()
        if outcome < 0.15:  # rewound after the flush: sink backpressure
            counter.flush()
            store.abort()
            final = dict(committed_final)
        elif outcome < 0.25:  # dropped before the flush: a revoke that gave up
            store.abort()
            final = dict(committed_final)
        else:
            counter.flush()
            store.commit()
            committed_final = dict(final)
            position += len(batch)
    expected, totals = _reference(stream, sizes, grace)
    assert {
        k: (v[0], len(v[1]), naive_top_chatters(v[3], capacity)) for k, v in expected.items()
    } == final
    # the summary was full in some window (counters replaced) exactly when it should be
    assert any(len(v[1]) > capacity for v in expected.values()) == (users > capacity)
    for v in expected.values():
        if len(v[1]) <= capacity:  # within capacity: the plain counts
            exact = sorted(Counter(v[3]).items(), key=lambda item: (-item[1], f"u{item[0]}"))
            assert naive_top_chatters(v[3], capacity) == [(f"u{u}", n) for u, n in exact[:10]]
    assert last_total == totals[0]
    assert _stored_totals(store) == totals
    chunks = [key for key in store.committed if key.startswith(b"x")]
    assert bool(chunks) == (users > 300)
    assert max(map(len, store.committed.values())) <= chunk_bytes


def _chatters(count: int, seed: int) -> list[str]:
    return [str(n) for n in random.Random(seed).sample(range(1, 1_200_000_001), count)]


def test_a_large_audience_is_kept_in_bounded_records_and_read_back_exactly() -> None:
    """200k chatters spread over Twitch's id range: no state value above the chunk size,
    and a counter that starts from the state alone (a restore) counts on exactly."""
    chunk_bytes = MIN_CHUNK_BYTES
    sizes = [MIN, 60 * MIN]
    counter = ChannelCounter(sizes, grace_ms=0, dedup_horizon_ms=MIN, chunk_bytes=chunk_bytes)
    store = DictStore()
    users = _chatters(200_001, seed=3)
    for i, user in enumerate(users[:200_000]):
        assert counter.process(msg(f"m{i}", T0 + i % 50_000, user=user), store) is not None
        if i % 40_000 == 0:
            counter.flush()
    counter.flush()
    sizes_written = {key: len(value) for key, value in store.data.items()}
    assert max(sizes_written.values()) <= chunk_bytes
    chunk_keys = [key for key in store.data if key.startswith(b"x")]
    assert len(chunk_keys) > 2 * 200_000 * 2 // chunk_bytes  # both windows, ~2 B per id
    assert sizes_written[b"c"] < 4_096

    # a fresh counter (a restored instance) reads the chunks back
    restored = ChannelCounter(sizes, grace_ms=0, dedup_horizon_ms=MIN, chunk_bytes=chunk_bytes)
    again = restored.process(msg("again", T0 + 1, user=users[0]), store)  # a known chatter
    assert again is not None
    assert [(a.messages, a.unique_chatters) for _, _, a in again.windows] == [
        (200_001, 200_000),
        (200_001, 200_000),
    ]
    new = restored.process(msg("new", T0 + 2, user=users[200_000]), store)
    assert new is not None
    assert [a.unique_chatters for _, _, a in new.windows] == [200_001, 200_001]
    restored.flush()
    # closing both windows deletes their chunk records
    closing = restored.process(msg("closer", T0 + 61 * MIN, user="1"), store)
    assert closing is not None
    assert [(w.window, w.unique_chatters) for w in closing.closed] == [
        ("1m", 200_001),
        ("1h", 200_001),
    ]
    restored.flush()
    assert not [key for key in store.data if key.startswith(b"x")]


def test_a_chunked_window_rewrites_only_the_ranges_that_gained_chatters() -> None:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN, chunk_bytes=MIN_CHUNK_BYTES)
    store = TxStore()
    for i, user in enumerate(_chatters(50_000, seed=4)):
        counter.process(msg(f"m{i}", T0, user=user), store)
    counter.flush()
    store.commit()
    assert len([key for key in store.committed if key.startswith(b"x")]) > 4
    counter.process(msg("one-more", T0, user="7"), store)  # id 7: the first range only
    counter.flush()
    chunk_writes = [key for key in store.updates if key.startswith(b"x")]
    assert len(chunk_writes) == 1


def test_a_record_of_the_layout_before_chunks_is_read() -> None:
    aggregate = WindowAggregate()
    aggregate.add(msg("a", T0, user="42"), 42)
    legacy = msgspec.msgpack.encode((1, T0, T0, [(MIN, T0, aggregate.to_tuple())]))
    store = DictStore()
    store.data[b"c"] = legacy
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN)
    update = counter.process(msg("b", T0 + 1, user="43"), store)
    assert update is not None
    assert (update.total_messages, update.windows[0][2].unique_chatters) == (2, 2)


def test_a_channel_seen_on_two_partitions_keeps_each_partitions_state() -> None:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN)
    p0, p1 = TxStore(), TxStore()
    assert counter.process(msg("a", T0), p0, partition=0) is not None
    assert counter.process(msg("b", T0 + 1), p1, partition=1) is not None
    assert counter.flush() == 2
    p0.commit()
    p1.commit()
    assert _stored_totals(p0) == (1, T0, T0)
    assert _stored_totals(p1) == (1, T0 + 1, T0 + 1)
    assert counter.process(msg("a", T0), p0, partition=0) is None  # a redelivery on p0


def test_a_busy_second_splits_its_dedup_bucket_and_still_finds_duplicates() -> None:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=10_000, chunk_bytes=16_448)
    store = TxStore()
    ids = [f"{i:08d}-3f2a-4c1e-9d7b-{i:012d}" for i in range(3_000)]  # UUID-sized, one second
    for i, mid in enumerate(ids):
        assert counter.process(msg(mid, T0 + i % 1_000), store) is not None
    counter.flush()
    store.commit()
    bucket = [key for key in store.committed if key.startswith(b"d")]
    assert len(bucket) > 5  # ~111 KB of ids in parts of at most 16 KiB
    assert max(len(store.committed[key]) for key in bucket) <= 16_448
    restored = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=10_000, chunk_bytes=16_448)
    assert all(
        restored.process(msg(mid, T0 + i % 1_000), store) is None for i, mid in enumerate(ids)
    )
    # 20 s later the bucket is past the horizon: every part is deleted
    restored.process(msg("later", T0 + 20_000), store)
    restored.flush()
    store.commit()
    assert [key for key in store.committed if key.startswith(b"d")] == [
        b"d" + struct.pack(">q", (T0 + 20_000) // 1_000)
    ]


def test_a_window_tracks_a_bounded_number_of_distinct_emotes() -> None:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN, max_emotes=10)
    store = DictStore()
    for i in range(15):  # 15 distinct emotes, then the first one again
        text = f"Emote{i}"
        counter.process(
            msg(f"m{i}", T0, text=text, emotes=[Emote(f"e{i}", 0, len(text) - 1)]), store
        )
    update = counter.process(msg("again", T0, text="Emote0", emotes=[Emote("e0", 0, 5)]), store)
    assert update is not None
    emotes = update.windows[0][2].emotes
    assert sorted(emotes) == sorted(f"e{i}" for i in range(10))
    assert emotes["e0"] == (2, "Emote0")  # a tracked emote still counts
    assert counter.untracked_emotes.value == 5
    long_text = "x" * 200
    long = counter.process(
        msg("long", T0 + 1, text=long_text, emotes=[Emote("y" * 65, 0, 199)]), store
    )
    assert long is not None
    assert "y" * 65 not in long.windows[0][2].emotes
    assert counter.untracked_emotes.value == 6


def test_an_emote_name_is_kept_to_64_characters() -> None:
    aggregate = WindowAggregate()
    text = "N" * 300
    aggregate.add(msg("a", T0, text=text, emotes=[Emote("1", 0, 299)]), 1)
    assert aggregate.emotes["1"] == (1, "N" * 64)


def test_a_window_tracks_a_bounded_number_of_chatters_whose_ids_are_not_numbers() -> None:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN)
    store = DictStore()
    limit = MAX_OTHER_CHATTERS
    for i in range(limit + 5):
        counter.process(msg(f"m{i}", T0, user=f"x{i}"), store)
    update = counter.process(msg("numeric", T0, user="12345"), store)
    assert update is not None
    window = update.windows[0][2]
    assert window.unique_chatters == limit + 1
    assert window.other_chatters == sorted(window.other_chatters)
    assert counter.untracked_chatters.value == 5
    assert counter.untracked_emotes.value == 0
    again = counter.process(msg("known", T0, user="x0"), store)  # tracked: counted once
    assert again is not None
    assert (again.windows[0][2].unique_chatters, counter.untracked_chatters.value) == (
        limit + 1,
        5,
    )


def test_a_chatter_id_that_is_not_a_number_is_kept_only_when_short_and_ascii() -> None:
    aggregate = WindowAggregate()
    kept = "x" * MAX_OTHER_CHATTER_ID
    assert aggregate.add(msg("a", T0, user=kept), None) == 0
    assert aggregate.add(msg("b", T0, user="y" * (MAX_OTHER_CHATTER_ID + 1)), None) == (
        UNTRACKED_CHATTER
    )
    assert aggregate.add(msg("c", T0, user="ünïcode"), None) == UNTRACKED_CHATTER
    assert aggregate.add(msg("d", T0, user="0" * 23), None) == 0
    assert aggregate.other_chatters == ["0" * 23, kept]
    assert aggregate.unique_chatters == 2


def test_the_channel_record_stays_bounded_with_the_most_non_numeric_chatters() -> None:
    counter = ChannelCounter([MIN], grace_ms=0, dedup_horizon_ms=MIN)
    store = DictStore()
    for i in range(MAX_OTHER_CHATTERS + 50):
        counter.process(msg(f"m{i}", T0, user=f"{i:0>{MAX_OTHER_CHATTER_ID}}z"), store)
        counter.process(msg(f"n{i}", T0, user=f"{i:x>{MAX_OTHER_CHATTER_ID}}"), store)
    counter.flush()
    record = store.data[b"c"]
    # 1,000 ids of 32 bytes plus msgpack's 2 byte header each, and the rest of the record
    assert MAX_OTHER_CHATTERS * 34 <= len(record) < MAX_OTHER_CHATTERS * 34 + 200
    assert counter.untracked_chatters.value == MAX_OTHER_CHATTERS + 50 + 50
