"""What the fake server sends: per-channel streams of (offset seconds, line).

Two sources: a replayed capture file (:class:`ReplaySource`) and the simulator
(:class:`SimulatedSource`). A stream starts when its channel is first joined.
"""

import gzip
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from chatpulse.fake_twitch.errors import CaptureError
from chatpulse.fake_twitch.simulate import (
    DEFAULT_START_MS,
    channel_names,
    room_id,
    simulate_channel,
)
from chatpulse.ingest.errors import IrcParseError
from chatpulse.ingest.irc.parser import parse_line

__all__ = ["ReplaySource", "SimulatedSource", "Source", "read_capture"]


class Source(Protocol):
    def stream(self, channel: str) -> Iterator[tuple[float, str]]:
        """The channel's lines with their offsets from the stream's start (may be empty)."""
        ...

    def room_id(self, channel: str) -> str:
        """The ``room-id`` the server announces in ROOMSTATE."""
        ...


def _fallback_room_id(channel: str) -> str:
    return str(100_000_000 + zlib.crc32(channel.encode()) % 800_000_000)


def read_capture(path: Path) -> list[str]:
    """Lines of a capture file (``.gz`` or plain text), one IRC line per row."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="\n") as fh:
            return [line.rstrip("\r\n") for line in fh if line.strip()]
    except OSError as exc:
        raise CaptureError(f"cannot read capture {path}: {exc}") from exc


class ReplaySource:
    """Replays capture lines per channel, offsets from ``tmi-sent-ts`` (kept non-decreasing).

    With ``channel`` every line is moved to that channel (its ``#channel`` parameter is
    rewritten, the rest of the line is sent as captured). Lines without a channel are skipped.
    With ``start_ms`` every ``tmi-sent-ts`` is shifted so the capture starts at that time:
    a 2019 capture replayed as if sent now (Kafka's time retention, which reads record
    timestamps, would otherwise delete the records within minutes of producing them).
    """

    def __init__(
        self, lines: list[str], channel: str | None = None, *, start_ms: int | None = None
    ) -> None:
        self._streams: dict[str, list[tuple[float, str]]] = {}
        self._rooms: dict[str, str] = {}
        first_ts: int | None = None
        last = 0.0
        shift = _timestamp_shift(lines, start_ms)
        for line in lines:
            try:
                msg = parse_line(line)
            except IrcParseError:
                continue
            name = msg.channel
            if not name:
                continue
            ts = msg.tags.get("tmi-sent-ts", "")
            if ts.isdigit():
                first_ts = int(ts) if first_ts is None else first_ts
                last = max(last, (int(ts) - first_ts) / 1000.0)
            text = _shift_sent_ts(line, ts, shift) if shift and ts.isdigit() else line
            if channel is not None and name != channel:
                text = _rewrite_channel(text, msg.command, name, channel)
                name = channel
            self._streams.setdefault(name, []).append((last, text))
            if msg.tags.get("room-id"):
                self._rooms.setdefault(name, msg.tags["room-id"])

    @classmethod
    def from_file(
        cls, path: Path, channel: str | None = None, *, start_ms: int | None = None
    ) -> "ReplaySource":
        return cls(read_capture(path), channel, start_ms=start_ms)

    @property
    def channels(self) -> dict[str, int]:
        """Lines per channel."""
        return {name: len(lines) for name, lines in self._streams.items()}

    def stream(self, channel: str) -> Iterator[tuple[float, str]]:
        return iter(self._streams.get(channel, []))

    def room_id(self, channel: str) -> str:
        return self._rooms.get(channel) or _fallback_room_id(channel)


_SENT_TS = re.compile(r"(?:^@|;)tmi-sent-ts=(\d+)")


def _timestamp_shift(lines: list[str], start_ms: int | None) -> int:
    """Milliseconds to add to every ``tmi-sent-ts`` so the first one becomes ``start_ms``."""
    if start_ms is None:
        return 0
    for line in lines:
        found = _SENT_TS.search(line.split(" ", 1)[0])
        if found:
            return start_ms - int(found.group(1))
    return 0


def _shift_sent_ts(line: str, ts: str, shift: int) -> str:
    old, new = f"tmi-sent-ts={ts}", f"tmi-sent-ts={int(ts) + shift}"
    return line.replace(old, new, 1)


def _rewrite_channel(line: str, command: str, old: str, new: str) -> str:
    marker = f" {command} #{old}"
    at = line.find(marker)
    if at < 0:
        return line
    cut = at + len(marker)
    return f"{line[:at]} {command} #{new}{line[cut:]}"


class SimulatedSource:
    """The simulator's channels (``streamer0000``...); other channels are silent."""

    def __init__(
        self,
        channels: int,
        rate: float,
        seed: int,
        *,
        duration_s: float | None = None,
        start_ms: int = DEFAULT_START_MS,
    ) -> None:
        self.channels, self.rate, self.seed = channels, rate, seed
        self.duration_s, self.start_ms = duration_s, start_ms
        self._index = {name: i for i, name in enumerate(channel_names(channels))}

    def stream(self, channel: str) -> Iterator[tuple[float, str]]:
        index = self._index.get(channel)
        if index is None:
            return iter(())
        return simulate_channel(
            index,
            self.channels,
            self.rate,
            self.seed,
            duration_s=self.duration_s,
            start_ms=self.start_ms,
        )

    def room_id(self, channel: str) -> str:
        index = self._index.get(channel)
        return room_id(index) if index is not None else _fallback_room_id(channel)
