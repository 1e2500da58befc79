"""The chat-spike rule and its per-channel baseline in the state (pure logic, no broker)."""

import random
import statistics

import msgspec
import pytest
from pydantic import ValidationError

from chatpulse.models import ChatSpike, WindowStats
from chatpulse.processor.app import pipeline_config
from chatpulse.processor.spikes import (
    STATE_KEY,
    Baseline,
    SpikeDetector,
    SpikeRule,
    read_baseline,
)
from chatpulse.settings import Settings

MIN = 60_000
T0 = 1_764_000_000_000 - 1_764_000_000_000 % (60 * MIN)
RULE = SpikeRule(size_ms=MIN, factor=3.0, min_messages=20, baseline_windows=5)


class DictStore(dict[bytes, bytes]):
    def get_bytes(self, key: bytes) -> bytes | None:
        return self.get(key)

    def set_bytes(self, key: bytes, value: bytes) -> None:
        self[key] = value

    def delete(self, key: bytes) -> None:
        self.pop(key, None)


def window(minute: int, messages: int, size_ms: int = MIN, channel: str = "c") -> WindowStats:
    start = T0 + minute * size_ms
    return WindowStats(channel, "1m", start, start + size_ms, messages, messages)


def test_a_window_far_above_the_median_of_the_full_baseline_is_a_spike() -> None:
    history = [10, 12, 9, 11, 10]
    assert RULE.decide(31, history) == 10.0  # 31 > 3 x 10
    assert RULE.decide(30, history) is None  # not above 3 x the median
    assert RULE.decide(500, None) is None  # no full baseline yet: never a spike


def test_the_floor_keeps_quiet_channels_from_spiking() -> None:
    assert RULE.decide(19, [0, 1, 0, 2, 1]) is None  # 19 > 3 x 1, but under the floor of 20
    assert RULE.decide(20, [0, 1, 0, 2, 1]) == 1.0


def test_an_even_baseline_takes_the_mean_of_the_middle_two() -> None:
    rule = SpikeRule(size_ms=MIN, factor=2.0, min_messages=1, baseline_windows=4)
    assert rule.decide(8, [1, 5, 3, 100]) is None  # median (3 + 5) / 2 = 4.0: 8 is not above 8
    assert rule.decide(9, [1, 5, 3, 100]) == 4.0


def test_windows_without_messages_count_zero_and_the_history_starts_at_the_first_window() -> None:
    baseline = RULE.record(None, T0, 7)
    assert RULE.history(baseline, T0 + MIN) is None  # one window of history, five needed
    # the channel was silent for three minutes: they count 0
    baseline = RULE.record(baseline, T0 + 4 * MIN, 9)
    assert baseline == Baseline(T0 + 4 * MIN, (7, 0, 0, 0, 9))
    assert RULE.history(baseline, T0 + 5 * MIN) == [7, 0, 0, 0, 9]
    assert RULE.history(baseline, T0 + 7 * MIN) == [0, 0, 9, 0, 0]
    # a silence longer than the baseline: all zeros, and the ring stays bounded
    far = RULE.record(baseline, T0 + 10_000 * MIN, 3)
    assert far == Baseline(T0 + 10_000 * MIN, (0, 0, 0, 0, 3))
    assert RULE.history(baseline, T0 + 10_000 * MIN) == [0] * 5


def test_the_ring_never_holds_more_than_the_baseline() -> None:
    baseline = None
    for minute in range(100):
        baseline = RULE.record(baseline, T0 + minute * MIN, minute)
    assert baseline == Baseline(T0 + 99 * MIN, (95, 96, 97, 98, 99))
    # a window that is not after the last one recorded changes nothing
    assert RULE.record(baseline, T0 + 99 * MIN, 1_000) == baseline


def test_the_detector_keeps_the_ring_in_the_channel_state_and_reports_spikes() -> None:
    detector = SpikeDetector(RULE)
    store = DictStore()
    spikes: list[ChatSpike] = []
    counts = [10, 12, 9, 11, 10, 40, 10, 25]
    for minute, count in enumerate(counts):
        spikes += detector.observe([window(minute, count)], store)
    # minute 5: 40 > 3 x median(10, 12, 9, 11, 10) = 30; minute 7: median(9..40) is 10, 25 < 30
    assert spikes == [
        ChatSpike("c", "1m", T0 + 5 * MIN, T0 + 6 * MIN, 40, baseline_median=10.0, factor=3.0)
    ]
    assert read_baseline(store[STATE_KEY]) == Baseline(T0 + 7 * MIN, (11, 10, 40, 10, 25))
    # the record of the spike on channel-stats is told apart from a WindowStats by its type
    wire = msgspec.json.decode(msgspec.json.encode(spikes[0]))
    assert wire["type"] == "spike"
    assert "closed" not in wire


def test_windows_closed_by_one_message_are_taken_in_order_and_other_sizes_are_ignored() -> None:
    ordered, shuffled = DictStore(), DictStore()
    detector = SpikeDetector(RULE)
    for minute in range(5):
        detector.observe([window(minute, 10)], ordered)
        detector.observe([window(minute, 10)], shuffled)
    closing = [window(6, 50), window(0, 999, size_ms=10 * MIN), window(5, 45)]
    one_by_one = detector.observe([closing[2]], ordered) + detector.observe([closing[0]], ordered)
    together = detector.observe(closing, shuffled)
    assert together == one_by_one
    assert [s.window_start for s in together] == [T0 + 5 * MIN, T0 + 6 * MIN]
    assert ordered == shuffled


def test_a_replay_from_the_restored_state_reaches_the_same_decisions() -> None:
    """Exactly-once: the state as of a checkpoint (what the changelog restores), fed the same
    closed windows again, gives the same spikes and the same ring."""
    detector = SpikeDetector(RULE)
    counts = [5, 8, 6, 7, 9, 60, 8, 70, 9, 10, 200, 11]
    store = DictStore()
    for minute in range(6):
        detector.observe([window(minute, counts[minute])], store)
    checkpoint = DictStore(store)
    first = [s for m in range(6, 12) for s in detector.observe([window(m, counts[m])], store)]
    again = [s for m in range(6, 12) for s in detector.observe([window(m, counts[m])], checkpoint)]
    assert first == again
    assert [s.window_start for s in first] == [T0 + 7 * MIN, T0 + 10 * MIN]
    assert store == checkpoint


def test_the_rule_matches_a_plain_median_over_a_random_series() -> None:
    """Held to the rule written the plain way (statistics.median over the previous five
    minutes, zeros for silent ones, none before the channel's first window)."""
    rng = random.Random(5)
    detector = SpikeDetector(RULE)
    store = DictStore()
    series: dict[int, int] = {}
    minute = 0
    found: list[int] = []
    for _ in range(400):
        minute += rng.choice([1, 1, 1, 2, 7])
        count = rng.choice([3, 10, 15, 20, 40, 90, 200])
        series[minute] = count
        found += [s.window_start for s in detector.observe([window(minute, count)], store)]
    first = min(series)
    expected = []
    for m, count in sorted(series.items()):
        if m - 5 < first:
            continue
        median = statistics.median(series.get(p, 0) for p in range(m - 5, m))
        if count >= 20 and count > 3.0 * median:
            expected.append(T0 + m * MIN)
    assert found == expected
    assert 10 < len(expected) < len(series) // 2


def test_the_settings_make_the_rule_or_none_when_the_spike_window_is_not_counted() -> None:
    config = pipeline_config(
        Settings(
            windows="10s,1m",
            spike_factor=2.5,
            spike_min_messages=7,
            spike_baseline_windows=12,
        )
    )
    assert config.spike_rule == SpikeRule(MIN, 2.5, 7, 12)
    # the spike window not among the windows: no spikes looked for
    assert pipeline_config(Settings(windows="10m,1h")).spike_rule is None
    assert pipeline_config(Settings(windows="1m,10m", spike_window="5m")).spike_rule is None
    assert pipeline_config(Settings(windows="1m,10m", spike_window="10m")).spike_rule == (
        SpikeRule(10 * MIN)
    )
    with pytest.raises(ValidationError, match="spike_window"):
        Settings(spike_window="often")
    with pytest.raises(ValidationError, match="spike_baseline_windows"):
        Settings(spike_baseline_windows=2)
    with pytest.raises(ValidationError, match="spike_factor"):
        Settings(spike_factor=0.5)
