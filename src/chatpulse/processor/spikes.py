"""Chat spikes: a closed window whose message count is far above its channel's recent baseline.

The rule (:meth:`SpikeRule.decide`): the closed window of size W (CHATPULSE_SPIKE_WINDOW, 1m)
starting at S is a spike when

- the channel has a full baseline: the N windows before it, ``[S - N*W, S)``
  (N = CHATPULSE_SPIKE_BASELINE_WINDOWS, 30), all lie at or after the first window the
  channel closed (a channel just seen has no history to be compared with);
- its count is at least the floor (CHATPULSE_SPIKE_MIN_MESSAGES, 20), so a quiet channel does
  not spike on three messages;
- its count is above factor x the median of the baseline's counts (CHATPULSE_SPIKE_FACTOR,
  3.0); a window of the baseline without any message counts 0.

State: one record per channel, ``s`` in its slice of the state store (keys of
:mod:`.channel` never start with ``s``): the start of the last window recorded and the counts
of the last N windows up to it, oldest first, at most N 64-bit numbers: bounded by design
whatever the channel's rate or age. It is read and written in the same state transaction as
the windows it follows, once per closed window of size W (one channel-minute), so it is
restored from the changelog with them: a replay after a crash reads the same ring, sees the
same closed windows in the same order (by start, see :meth:`SpikeDetector.observe`) and
reaches the same decisions. Nothing here reads a clock.
"""

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from chatpulse.models import ChatSpike, WindowStats
from chatpulse.processor.buckets import KeyValueStore
from chatpulse.windows import format_duration

__all__ = ["STATE_KEY", "Baseline", "SpikeDetector", "SpikeRule"]

STATE_KEY = b"s"

# (start of the last window recorded, counts of the last windows up to it, oldest first)
_Stored = tuple[int, list[int]]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Stored)


@dataclass(frozen=True, slots=True)
class Baseline:
    """The counts of a channel's last windows: ``counts[-1]`` is the window starting at
    ``last_start``, ``counts[-k]`` the one ``k - 1`` sizes before it."""

    last_start: int
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SpikeRule:
    """The settings of the rule (see the module's docstring)."""

    size_ms: int
    factor: float = 3.0
    min_messages: int = 20
    baseline_windows: int = 30

    def _counts(self, baseline: Baseline, start: int) -> list[int]:
        """The baseline's counts followed by a 0 for each window without messages between
        its last window and ``start`` (at most ``baseline_windows`` of them)."""
        gap = min((start - baseline.last_start) // self.size_ms - 1, self.baseline_windows)
        return [*baseline.counts, *[0] * gap]

    def history(self, baseline: Baseline | None, start: int) -> list[int] | None:
        """The counts of the ``baseline_windows`` windows before ``start`` (0 for a window
        without messages), or None when the channel's record does not reach back that far."""
        if baseline is None or start <= baseline.last_start:
            return None
        counts = self._counts(baseline, start)
        if len(counts) < self.baseline_windows:
            return None
        return counts[-self.baseline_windows :]

    def decide(self, count: int, history: list[int] | None) -> float | None:
        """The baseline's median when a window of ``count`` messages after ``history`` is a
        spike, else None."""
        if history is None or count < self.min_messages:
            return None
        median = statistics.median(history)
        return float(median) if count > self.factor * median else None

    def record(self, baseline: Baseline | None, start: int, count: int) -> Baseline:
        """The baseline after the window at ``start`` closed with ``count`` messages."""
        if baseline is None:
            return Baseline(start, (count,))
        if start <= baseline.last_start:
            return baseline  # never happens: windows of a channel close in order
        counts = (*self._counts(baseline, start), count)[-self.baseline_windows :]
        return Baseline(start, counts)


def read_baseline(data: bytes | None) -> Baseline | None:
    if data is None:
        return None
    last_start, counts = _decoder.decode(data)
    return Baseline(last_start, tuple(counts))


def write_baseline(baseline: Baseline) -> bytes:
    return _encoder.encode((baseline.last_start, list(baseline.counts)))


class SpikeDetector:
    """Follows each channel's closed windows of the rule's size in its state; yields spikes."""

    def __init__(self, rule: SpikeRule) -> None:
        self.rule = rule
        self._window = format_duration(rule.size_ms)

    def observe(self, closed: Iterable[WindowStats], store: KeyValueStore) -> list[ChatSpike]:
        """Record a message's closed windows (one channel's) in the channel's ``store`` and
        return those that are spikes. Windows of other sizes are passed over; several closed
        by one message are taken by start (the order they would close one by one)."""
        rule = self.rule
        mine = sorted(
            (w for w in closed if w.window_end - w.window_start == rule.size_ms),
            key=lambda w: w.window_start,
        )
        if not mine:
            return []
        baseline = read_baseline(store.get_bytes(STATE_KEY))
        spikes: list[ChatSpike] = []
        for window in mine:
            median = rule.decide(window.messages, rule.history(baseline, window.window_start))
            if median is not None:
                spikes.append(
                    ChatSpike(
                        channel=window.channel,
                        window=self._window,
                        window_start=window.window_start,
                        window_end=window.window_end,
                        messages=window.messages,
                        baseline_median=median,
                        factor=rule.factor,
                    )
                )
            baseline = rule.record(baseline, window.window_start, window.messages)
        assert baseline is not None
        store.set_bytes(STATE_KEY, write_baseline(baseline))
        return spikes
