"""The ``tracked-channels`` topic: its one decoding rule, and the follower the API and ingest share.

The topic is compacted with the channel login as key: the latest record of a key is the truth,
so reading it from the beginning gives the current set. :func:`decode_tracked` is the rule:

- the key names the channel; a key that is not a channel login is a bad record, and changes
  nothing (there is no channel to change);
- only a value ``{"channel": <the key>, "tracked": true}`` tracks the channel;
- a tombstone, or ``"tracked": false``, untracks it;
- any other value (not the JSON object, a ``channel`` that is not the key's) is a bad record
  and the channel is not tracked: a bad record is the latest word on its key, and once the
  topic is compacted it is the only one, so a reader starting later concludes the same.

Bad records are reported (the ingest dead-letters them, the API logs them), never dropped
silently. Partitions are assigned by hand (no consumer group): every reader needs the whole
set, and there are no offsets worth committing.
"""

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException

from chatpulse.errors import TopicMissingError, TrackedRecordError
from chatpulse.logs import RateLimitedLog
from chatpulse.models import TrackedChannel, normalize_channel
from chatpulse.partitions import assign_all

__all__ = ["BadTrackedRecord", "TrackedChannelsFollower", "decode_tracked"]

logger = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(TrackedChannel)


def decode_tracked(key: bytes | None, value: bytes | None) -> tuple[str, bool]:
    """(channel, tracked) of one record, by the rule in the module docstring.

    Raises TrackedRecordError for a bad record; its ``channel`` is then untracked (None when
    the key is not a channel, and nothing changes).
    """
    try:
        channel = normalize_channel((key or b"").decode())
    except (UnicodeDecodeError, ValueError):
        raise TrackedRecordError(f"key {key!r} is not a Twitch channel", None) from None
    if value is None:
        return channel, False
    try:
        entry = _decoder.decode(value)
    except msgspec.DecodeError as exc:
        reason = f"value of {channel} is not a channel entry: {exc}"
        raise TrackedRecordError(reason, channel) from None
    if entry.channel.lower().removeprefix("#") != channel:
        raise TrackedRecordError(
            f"value names channel {entry.channel[:40]!r}, its key {channel!r}", channel
        )
    return channel, entry.tracked


@dataclass(frozen=True, slots=True)
class BadTrackedRecord:
    """A record of the topic that is not a valid channel entry (for the dead-letter topic)."""

    raw: bytes
    reason: str
    partition: int
    offset: int


class TrackedChannelsFollower:
    """The tracked set, read from the topic's beginning by :meth:`load` and kept up by :meth:`poll`.

    One thread calls ``load``/``poll``/``close``; each bad record is logged (rate-limited) and
    given to ``on_bad`` there, if given. Other threads may read :attr:`channels`.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        client_id: str,
        security: Mapping[str, str] | None = None,
        on_bad: Callable[[BadTrackedRecord], None] | None = None,
    ) -> None:
        self.topic = topic
        self.channels: set[str] = set()
        self._on_bad = on_bad
        self._bad_log = RateLimitedLog(logger, 10.0)  # a topic full of bad records: few lines
        self._wait_log = RateLimitedLog(logger, 10.0)  # Kafka away: a try every second
        self._consumer = Consumer(
            {
                **(security or {}),
                "bootstrap.servers": bootstrap_servers,
                "group.id": f"{client_id}-{uuid.uuid4().hex}",
                "client.id": client_id,
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "logger": logger,
            }
        )
        self.assigned = False
        self.topic_missing = False  # the cluster says the topic does not exist (yet)
        self._partitions: set[int] = set()
        self._at_end: set[int] = set()

    def load(self, timeout_s: float = 10.0) -> set[str]:
        """Read the topic to its end (at most ``timeout_s``); return the tracked channels."""
        deadline = time.monotonic() + timeout_s
        while not self.assigned and time.monotonic() < deadline:
            if not self._assign(min(5.0, max(0.1, deadline - time.monotonic()))):
                time.sleep(0.5)
        while self.assigned and self._at_end != self._partitions:
            if time.monotonic() >= deadline:
                logger.warning("topic %s not read to its end within %.0fs", self.topic, timeout_s)
                break
            self._consume(0.2)
        logger.info("tracked channels from %s: %d", self.topic, len(self.channels))
        return set(self.channels)

    def poll(self, timeout_s: float = 0.0) -> tuple[set[str], set[str]]:
        """Apply new records; return the channels (added, removed) since the last call."""
        if not self.assigned and not self._assign(max(1.0, timeout_s)):
            return set(), set()
        before = set(self.channels)
        self._consume(timeout_s)
        return self.channels - before, before - self.channels

    def note(self, channel: str, *, tracked: bool) -> None:
        """A change this process has just written (it is read back later, to the same effect)."""
        if tracked:
            self.channels.add(channel)
        else:
            self.channels.discard(channel)

    def close(self) -> None:
        """Leave the cluster."""
        self._consumer.close()

    def _assign(self, timeout_s: float) -> bool:
        try:
            partitions = assign_all(self._consumer, self.topic, OFFSET_BEGINNING, timeout_s)
        except TopicMissingError:
            self.topic_missing = True
            self._wait_log.warning("topic %s does not exist: run `chatpulse init`", self.topic)
            return False
        except KafkaException as exc:
            self._wait_log.warning("cannot follow %s yet: %s", self.topic, exc)
            return False
        self._partitions = {tp.partition for tp in partitions}
        self.assigned, self.topic_missing = True, False
        return True

    def _consume(self, timeout_s: float) -> None:
        for msg in self._consumer.consume(num_messages=1000, timeout=timeout_s):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(msg.partition())
                else:
                    logger.warning("reading %s: %s", self.topic, error.str())
                continue
            self._apply(msg.key(), msg.value(), msg.partition(), msg.offset())

    def _apply(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        try:
            channel, tracked = decode_tracked(key, value)
        except TrackedRecordError as exc:
            if exc.channel is not None:
                self.channels.discard(exc.channel)
            self._bad_log.warning(
                "bad record in %s (partition %d, offset %d): %s", self.topic, partition, offset, exc
            )
            if self._on_bad is not None:
                self._on_bad(BadTrackedRecord(value or key or b"", str(exc), partition, offset))
            return
        self.note(channel, tracked=tracked)
