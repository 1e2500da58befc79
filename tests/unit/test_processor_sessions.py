"""Chatter sessions (session windows per channel and user) over a plain store, held to a
reference model written the plain way (every open session looked at after every message)."""

import math
import random
from collections import defaultdict

import pytest
from test_processor_channel import DictStore, TxStore, msg

from chatpulse.models import ChatMessage, WindowStats
from chatpulse.processor.channel import ChannelCounter
from chatpulse.processor.sessions import SessionRules, WindowSessions, length_bucket, nearest_rank

SEC = 1_000
MIN = 60 * SEC
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (60 * MIN)


def test_lengths_are_exact_to_the_second_below_256_s_and_within_a_32nd_above() -> None:
    assert [length_bucket(s) for s in (0, 1, 59, 255)] == [0, 1, 59, 255]
    assert length_bucket(256) == 256
    assert length_bucket(263) == 256  # buckets of 8 s between 256 and 512 s
    assert length_bucket(264) == 264
    assert length_bucket(3_599) == 3_584  # of 64 s between 2,048 and 4,096 s
    for seconds in range(256, 200_000, 97):
        low = length_bucket(seconds)
        assert low <= seconds < low + max(1, low // 32)
    # bounded: a year of lengths lands in about a thousand buckets
    assert len({length_bucket(s) for s in range(0, 365 * 86_400, 7)}) < 1_000


def test_nearest_rank_quantile() -> None:
    assert nearest_rank({}, 0.9) is None
    assert nearest_rank({5: 1}, 0.9) == 5
    values = {1: 5, 2: 3, 9: 1, 40: 1}  # 10 values: the 9th smallest is 9
    assert nearest_rank(values, 0.9) == 9
    assert nearest_rank(values, 0.5) == 1


def test_window_sessions_mean_and_p90() -> None:
    window = WindowSessions(started=3)
    for seconds in (10, 20, 30, 400):
        window.end(seconds * SEC + 250)
    assert (window.ended, window.mean_s, window.p90_s) == (4, 115.25, 400 - 400 % 8)
    assert WindowSessions.from_tuple(window.to_tuple()) == window
    assert WindowSessions().mean_s is None
    assert WindowSessions().p90_s is None


def test_a_gap_that_is_not_whole_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="whole number of seconds"):
        SessionRules(1_500, 1_000)


def _closed(update_closed: list[WindowStats]) -> dict[tuple[int, int], WindowStats]:
    return {(w.window_end - w.window_start, w.window_start): w for w in update_closed}


def test_sessions_count_where_they_start_and_at_last_message_plus_gap() -> None:
    counter = ChannelCounter([MIN], grace_ms=5 * SEC, dedup_horizon_ms=MIN, session_gap_ms=MIN)
    store = DictStore()
    closed: dict[tuple[int, int], WindowStats] = {}
    stream = [
        msg("a1", T0 + 1 * SEC, user="1"),
        msg("b1", T0 + 10 * SEC, user="2"),
        msg("a2", T0 + 30 * SEC, user="1"),  # A: 29 s long, ends at T0 + 90 s
        msg("a3", T0 + 95 * SEC, user="1"),  # after A's gap: a new session of A
        msg("c1", T0 + 100 * SEC, user="3"),
        # B ended at T0 + 70 s; the channel's time passes the minute T0 + 2 min and its grace
        msg("c2", T0 + 3 * MIN + 10 * SEC, user="3"),
    ]
    for message in stream:
        update = counter.process(message, store)
        assert update is not None
        closed.update(_closed(update.closed))
    first, second = closed[(MIN, T0)], closed[(MIN, T0 + MIN)]
    assert (first.messages, first.sessions_started, first.sessions_ended) == (3, 2, 0)
    assert (first.session_mean_s, first.session_p90_s) == (None, None)
    # A (29 s) and B (0 s) ended there; A's and C's new sessions started there
    assert (second.messages, second.sessions_started, second.sessions_ended) == (2, 2, 2)
    assert (second.session_mean_s, second.session_p90_s) == (14.5, 29)
    # A's second session (one message at T0 + 95 s) ended at T0 + 155 s, C's at T0 + 160 s:
    # in the window of the minute T0 + 2 min, which had no message and was made for them
    third = closed[(MIN, T0 + 2 * MIN)]
    assert (third.messages, third.sessions_started, third.sessions_ended) == (0, 0, 2)
    assert (third.session_mean_s, third.session_p90_s) == (0.0, 0)


def test_sessions_off_keeps_no_session_state() -> None:
    counter = ChannelCounter([MIN], grace_ms=5 * SEC, dedup_horizon_ms=MIN)
    store = DictStore()
    for n in range(50):
        counter.process(msg(f"m{n}", T0 + n * 10 * SEC, user=str(n % 3)), store)
    counter.flush()
    assert counter.sessions is None
    assert not [key for key in store.data if key[:1] in (b"u", b"g", b"G")]


# ---- the reference model


def _reference(
    stream: list[ChatMessage], sizes: list[int], grace: int, gap: int
) -> dict[tuple[int, int], tuple[int, list[int]]]:
    """(size, start) -> (sessions started, lengths in ms of those ended): the rules of
    chatpulse.processor.sessions, every open session looked at after every message."""
    seen: set[str] = set()
    latest = 0
    sessions: dict[str, tuple[int, int]] = {}
    started: dict[tuple[int, int], int] = defaultdict(int)
    ended: dict[tuple[int, int], list[int]] = defaultdict(list)

    def end(first: int, last: int) -> None:
        at = last + gap
        for size in sizes:
            ended[(size, at // size * size)].append(last - first)

    def start(at: int, step: int) -> None:
        for size in sizes:
            started[(size, at // size * size)] += step

    for m in stream:
        if m.id in seen:
            continue
        seen.add(m.id)
        latest = max(latest, m.sent_at)
        for user, (first, last) in list(sessions.items()):
            if last + gap + grace <= latest:
                end(first, last)
                del sessions[user]
        smallest = min(sizes)
        if m.sent_at // smallest * smallest + smallest + grace <= latest:
            continue  # late
        t = m.sent_at
        if m.user_id in sessions:
            first, last = sessions[m.user_id]
            if t > last + gap:
                end(first, last)
                del sessions[m.user_id]
            elif t < first - gap:
                continue
            else:
                if t < first:
                    start(first, -1)
                    start(t, +1)
                sessions[m.user_id] = (min(first, t), max(last, t))
                continue
        start(t, +1)
        sessions[m.user_id] = (t, t)
    keys = set(started) | set(ended)
    return {key: (started.get(key, 0), ended.get(key, [])) for key in keys}


def _expected(started: int, lengths: list[int]) -> tuple[int, int, float | None, int | None]:
    if not lengths:
        return (started, 0, None, None)
    seconds = sorted(ms // 1000 for ms in lengths)
    exact_p90 = seconds[math.ceil(0.9 * len(seconds)) - 1]
    # above 256 s the reported p90 is the exact one with all but its 6 highest bits cleared
    p90 = (
        exact_p90
        if exact_p90 < 256
        else exact_p90 - exact_p90 % (1 << (exact_p90.bit_length() - 6))
    )
    return (started, len(lengths), round(sum(lengths) / len(lengths) / 1000, 3), p90)


@pytest.mark.parametrize("chunk_bytes", [16_448, 65_536])
def test_random_stream_with_checkpoints_and_rewinds_matches_the_reference(chunk_bytes: int) -> None:
    """Out-of-order (within the grace) and late messages, duplicates, a chatter population
    that drifts (sessions end) and long-lived chatters (lengths past 256 s); checkpoints
    commit or roll back at random. Every closed window's session counts are the reference's."""
    rng = random.Random(5)
    sizes, grace, gap = [MIN, 10 * MIN], 3 * SEC, 20 * SEC
    stream: list[ChatMessage] = []
    now = T0
    for i in range(6_000):
        now += rng.randint(0, 400)
        roll = rng.random()
        if roll < 0.01:
            sent = now - rng.randint(70 * SEC, 120 * SEC)  # late for the 1m window
        elif roll < 0.2:
            sent = now - rng.randint(0, 2_500)  # out of order within the grace
        else:
            sent = now
        if rng.random() < 0.25:
            user = str(rng.randint(1, 3))  # regulars: sessions of minutes
        else:
            user = str(1_000 + i // 300 * 10 + rng.randint(0, 25))  # a drifting crowd
        message = msg(f"id{i}", max(sent, T0), user=user)
        stream.append(message)
        if rng.random() < 0.04:
            stream.append(message)
    stream.append(msg("closer", now + 15 * MIN, user="9"))
    counter = ChannelCounter(
        sizes,
        grace_ms=grace,
        dedup_horizon_ms=3_600_000,
        chunk_bytes=chunk_bytes,
        session_gap_ms=gap,
    )
    store = TxStore()
    closed: dict[tuple[int, int], WindowStats] = {}
    committed: dict[tuple[int, int], WindowStats] = {}
    position = 0
    rewinds = 0
    while position < len(stream):
        batch = stream[position : position + rng.randint(1, 300)]
        for m in batch:
            update = counter.process(m, store)
            if update is not None:
                closed.update(_closed(update.closed))
        outcome = rng.random()
        if outcome < 0.3:  # rewound after the flush, or dropped before it
            if outcome < 0.15:
                counter.flush()
            store.abort()
            closed = dict(committed)
            rewinds += 1
        else:
            counter.flush()
            store.commit()
            committed = dict(closed)
            position += len(batch)
    reference = _reference(stream, sizes, grace, gap)
    final_time = now + 15 * MIN
    due = {key for key in reference if key[1] + key[0] + grace <= final_time}
    assert rewinds > 3
    assert due <= set(closed)  # every window with sessions closed
    ended = 0
    for key, window in closed.items():
        expected = _expected(*reference.get(key, (0, [])))
        got = (
            window.sessions_started,
            window.sessions_ended,
            window.session_mean_s,
            window.session_p90_s,
        )
        assert got == expected, key
        if key[0] == MIN:
            ended += window.sessions_ended
    # the test means something: many sessions, some long ones, windows made by ends alone
    assert ended > 300
    assert any(len(lengths) and max(lengths) > 256_000 for _, lengths in reference.values())
    assert any(w.messages == 0 and w.sessions_ended for w in closed.values())
    # only the sessions still open at the end stay in the state
    open_users = [key for key in store.committed if key[:1] == b"u"]
    assert 0 < len(open_users) <= 40
    assert max(map(len, store.committed.values())) <= chunk_bytes
