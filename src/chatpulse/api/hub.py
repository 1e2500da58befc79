"""One shared consumer of ``channel-stats`` fanning updates out to live-stream subscribers.

A daemon thread polls confluent-kafka (assigned to every partition at the latest offset, no
consumer group work) and hands each batch to the event loop; the loop copies each update into the
bounded queue of every subscriber of that channel. A slow client loses its oldest updates, never
slows the others down. At most ``max_streams`` streams are open at once (:meth:`LiveHub.slot`);
each costs a socket and a queue of up to ``queue_size`` updates.
"""

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping

import msgspec
from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition
from prometheus_client import Counter, Gauge

from chatpulse.api.errors import LiveStreamsFullError
from chatpulse.api.log_limits import KindedLog
from chatpulse.api.schemas import SpikeOut, WindowStatsOut, ms_to_datetime
from chatpulse.errors import TopicMissingError
from chatpulse.models import ChatSpike, WindowStats
from chatpulse.partitions import assign_all

__all__ = ["LiveHub", "spike_json", "stats_json"]

logger = logging.getLogger(__name__)

LIVE_SUBSCRIBERS = Gauge("chatpulse_api_live_subscribers", "Open live-stream connections")
LIVE_REFUSED = Counter(
    "chatpulse_api_live_refused_total", "Live-stream requests refused at the connection cap"
)
LIVE_DROPPED = Counter(
    "chatpulse_api_live_dropped_total", "Live updates dropped because a client was slow"
)
LIVE_UNREADABLE = Counter(
    "chatpulse_api_live_unreadable_total", "channel-stats records that did not decode"
)

_decoder = msgspec.json.Decoder(WindowStats)
_spike_decoder = msgspec.json.Decoder(ChatSpike)


class _Kind(msgspec.Struct):
    """What a channel-stats record is: a ChatSpike says ``"type": "spike"``; a WindowStats
    has no type."""

    type: str = ""


_kind_decoder = msgspec.json.Decoder(_Kind)


def stats_json(stats: WindowStats) -> str:
    """The API's JSON of a WindowStats wire record (ISO times), as sent in SSE events."""
    return WindowStatsOut(
        channel=stats.channel,
        window=stats.window,
        window_start=ms_to_datetime(stats.window_start),
        window_end=ms_to_datetime(stats.window_end),
        messages=stats.messages,
        unique_chatters=stats.unique_chatters,
        top_emotes=[msgspec.structs.asdict(emote) for emote in stats.top_emotes],
        closed=stats.closed,
        top_chatters=[msgspec.structs.asdict(chatter) for chatter in stats.top_chatters],
        deleted_messages=stats.deleted_messages,
        timeouts=stats.timeouts,
        bans=stats.bans,
        sessions_started=stats.sessions_started,
        sessions_ended=stats.sessions_ended,
        session_mean_s=stats.session_mean_s,
        session_p90_s=stats.session_p90_s,
    ).model_dump_json()


def spike_json(spike: ChatSpike) -> str:
    """The API's JSON of a ChatSpike wire record, as sent in SSE ``spike`` events."""
    return SpikeOut(
        channel=spike.channel,
        window=spike.window,
        window_start=ms_to_datetime(spike.window_start),
        window_end=ms_to_datetime(spike.window_end),
        messages=spike.messages,
        baseline_median=spike.baseline_median,
        factor=spike.factor,
    ).model_dump_json()


def _decode(value: bytes) -> WindowStats | ChatSpike:
    """A channel-stats record; raises ``msgspec.MsgspecError`` when it is neither a
    WindowStats nor a ChatSpike."""
    if _kind_decoder.decode(value).type == "spike":
        return _spike_decoder.decode(value)
    return _decoder.decode(value)


def _payload(record: WindowStats | ChatSpike) -> tuple[str, str, str]:
    """(window, SSE event name, JSON) of a record: no name for window statistics."""
    if isinstance(record, ChatSpike):
        return record.window, "spike", spike_json(record)
    return record.window, "", stats_json(record)


class LiveHub:
    """Subscribe with :meth:`subscribe`; :meth:`start`/:meth:`stop` run the consumer thread."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        queue_size: int = 64,
        max_streams: int = 500,
        security: Mapping[str, str] | None = None,
    ) -> None:
        self._config = {
            **(security or {}),
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"chatpulse-api-live-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "client.id": "chatpulse-api-live",
        }
        self._topic = topic
        self._queue_size = queue_size
        self._max_streams = max_streams
        self._streams = 0
        self._subscribers: dict[str, set[asyncio.Queue[tuple[str, str, str]]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.assigned = threading.Event()
        self._log = KindedLog(logger)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="live-hub", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``max_streams`` live-stream places; LiveStreamsFullError if none."""
        # Taken before the response starts (a stream cannot turn into an error answer later)
        # and without an await, so concurrent requests cannot both take the last place.
        if self._streams >= self._max_streams:
            LIVE_REFUSED.inc()
            raise LiveStreamsFullError(self._max_streams)
        self._streams += 1
        try:
            yield
        finally:
            self._streams -= 1

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator["asyncio.Queue[tuple[str, str, str]]"]:
        """A queue receiving (window, event name, JSON) of each update of ``channel`` while the
        block runs: the event name is empty for window statistics, ``spike`` for a chat spike."""
        queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue(self._queue_size)
        self._subscribers.setdefault(channel, set()).add(queue)
        LIVE_SUBSCRIBERS.inc()
        try:
            yield queue
        finally:
            LIVE_SUBSCRIBERS.dec()
            queues = self._subscribers.get(channel)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._subscribers[channel]

    def _dispatch(self, batch: list[tuple[str, tuple[str, str, str]]]) -> None:
        for channel, payload in batch:
            for queue in self._subscribers.get(channel, ()):
                if queue.full():
                    queue.get_nowait()
                    LIVE_DROPPED.inc()
                queue.put_nowait(payload)

    def _assign(self, consumer: Consumer) -> list[TopicPartition]:
        partitions = assign_all(consumer, self._topic, OFFSET_END)
        # Pin the end offsets now: a logical OFFSET_END is resolved only on the first fetch,
        # and an update produced before that would be skipped.
        pinned = []
        for tp in partitions:
            _low, high = consumer.get_watermark_offsets(tp, timeout=5)
            pinned.append(TopicPartition(tp.topic, tp.partition, high))
        consumer.assign(pinned)
        logger.info("live hub reads %s, %d partitions, from the end", self._topic, len(pinned))
        return pinned

    def _run(self) -> None:
        consumer = Consumer(self._config)
        partitions: list[TopicPartition] = []
        try:
            while not self._stop.is_set():
                if not partitions:
                    try:
                        partitions = self._assign(consumer)
                    except (KafkaException, TopicMissingError) as exc:
                        self._log.warning(
                            "assign", "live hub cannot assign %s yet: %s", self._topic, exc
                        )
                        self._stop.wait(1.0)
                        continue
                    self.assigned.set()
                self._poll_once(consumer)
        finally:
            consumer.close()

    def _poll_once(self, consumer: Consumer) -> None:
        records = consumer.consume(num_messages=500, timeout=0.2)
        batch: list[tuple[str, tuple[str, str, str]]] = []
        for record in records:
            if record.error() is not None:
                logger.debug("live hub: %s", record.error())
                continue
            value = record.value()
            if value is None:
                continue
            try:
                update = _decode(value)
            except msgspec.MsgspecError as exc:
                LIVE_UNREADABLE.inc()
                self._log.warning(
                    "unreadable",
                    "unreadable channel-stats record partition %s offset %s: %s",
                    record.partition(),
                    record.offset(),
                    exc,
                )
                continue
            # Encode only for channels someone watches (a racy read is harmless here).
            if update.channel in self._subscribers:
                batch.append((update.channel, _payload(update)))
        if batch and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._dispatch, batch)
