"""Wiring: settings -> Quix ``Application``, topics, Cassandra write-back, topology; running it."""

import faulthandler
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from quixstreams import Application
from quixstreams.kafka.configuration import ConnectionConfig

from chatpulse.errors import KafkaUnavailableError
from chatpulse.gc_tuning import rarer_collections
from chatpulse.kafka_admin import admin_client
from chatpulse.processor.cassandra_flush import CassandraFlush
from chatpulse.processor.cql import CassandraWriter
from chatpulse.processor.metrics import ProcessorMetrics
from chatpulse.processor.offsets import restore_missing_offsets
from chatpulse.processor.outage import is_kafka_outage
from chatpulse.processor.quix_hooks import (
    changelog_topic,
    end_checkpoints_early,
    rewind_buffered_reads,
    time_checkpoints,
)
from chatpulse.processor.spikes import SpikeRule
from chatpulse.processor.state_guard import check_state_dir
from chatpulse.processor.topology import PipelineConfig, PipelineTopics, build_pipeline
from chatpulse.processor.watchdog import CommitWatchdog, restart_process
from chatpulse.provision import initialize
from chatpulse.settings import Settings
from chatpulse.topics import Topics
from chatpulse.transactional import transactional_id

__all__ = [
    "GC_THRESHOLDS",
    "Processor",
    "build_processor",
    "pipeline_config",
    "run_processor",
    "run_through_outages",
]

logger = logging.getLogger(__name__)

# An open transaction of a killed instance blocks read_committed readers of its changelog
# and channel-stats partitions until the broker aborts it; keep that short but well above a
# checkpoint (commit interval + a sink flush).
_TRANSACTION_TIMEOUT_MS = 30_000
# The collector's thresholds while processing (CPython's defaults: 700, 10, 10). Each message
# allocates several tracked containers (its record, its update, Quix's row, the rows of the
# checkpoint) while thousands of long-lived ones (the channels' working copies, the pending
# updates) stay alive: at the defaults the collector took a quarter of the processing thread
# in a profile, and without it 30-50% more messages per second went through.
GC_THRESHOLDS = (500_000, 100, 100)
# Backoff between restarts of the pipeline after a Kafka outage (run_through_outages).
_RESTART_FIRST_S = 1.0
_RESTART_MAX_S = 30.0


@dataclass
class Processor:
    """A configured processor, ready to ``run()``."""

    app: Application
    cassandra: CassandraWriter | None
    metrics: ProcessorMetrics

    def run(self) -> None:
        """Process until SIGINT/SIGTERM (Quix installs the handlers and stops gracefully)."""
        try:
            with rarer_collections(*GC_THRESHOLDS):
                self.app.run()
        finally:
            faulthandler.cancel_dump_traceback_later()  # armed by _watching_stalls
            if self.cassandra is not None:
                self.cassandra.close()


def build_processor(
    settings: Settings, metrics: ProcessorMetrics | None = None, *, cassandra: bool = True
) -> Processor:
    """Build the Application, topics, Cassandra write-back and topology from ``settings``
    (``cassandra=False`` leaves Cassandra out: benchmarks use it to isolate its cost)."""
    metrics = metrics or ProcessorMetrics()
    exactly_once = settings.processing_guarantee == "exactly-once"
    producer_config: dict[str, Any] = {"linger.ms": 20}
    if exactly_once:
        # Stable per instance: a restarted instance fences its former self at once instead of
        # waiting for the broker to time the dead transaction out.
        producer_config["transactional.id"] = transactional_id(
            settings.processor_group, settings.state_dir, settings.instance_id
        )
        producer_config["transaction.timeout.ms"] = _TRANSACTION_TIMEOUT_MS
    app = Application(
        # ConnectionConfig carries TLS/SASL to every client Quix opens (consumer, producer, admin).
        broker_address=ConnectionConfig.from_librdkafka_dict(settings.kafka_client_config()),
        consumer_group=settings.processor_group,
        auto_offset_reset="earliest",
        commit_interval=settings.commit_interval_s,
        state_dir=settings.state_dir,
        processing_guarantee=settings.processing_guarantee,
        consumer_extra_config={
            # A killed instance's partitions move after this long (librdkafka's default: 45 s).
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 2_000,
            "statistics.interval.ms": 5_000,
            "stats_cb": metrics.on_kafka_stats,
        },
        producer_extra_config=producer_config,
        loglevel=None,  # logging is configured by the entry point
    )
    names = Topics.from_settings(settings)
    topics = PipelineTopics(
        messages=app.topic(names.messages, key_deserializer="bytes", value_deserializer="bytes"),
        stats=app.topic(names.stats, key_serializer="bytes", value_serializer="bytes"),
        deadletter=app.topic(names.deadletter, key_serializer="bytes", value_serializer="bytes"),
        events=app.topic(names.events, key_deserializer="bytes", value_deserializer="bytes"),
    )
    config = pipeline_config(settings)
    writer = CassandraWriter(settings) if cassandra else None
    writers = (
        [
            CassandraFlush(
                writer,
                metrics,
                user_history=settings.user_history,
                search_index=settings.search_index,
                write_attempts=settings.cassandra_write_attempts,
            )
        ]
        if writer
        else []
    )
    build_pipeline(app, topics, config, writers=writers, metrics=metrics)
    watchdog = None
    if settings.commit_stall_restart_s:
        watchdog = CommitWatchdog(settings.commit_stall_restart_s, restart_process)
        watchdog.start()
    time_checkpoints(app, _watching_stalls(metrics.checkpoint_seconds.observe), watchdog)
    rewind_buffered_reads(app)
    for flush in writers:  # shorter checkpoints while Cassandra writes slowly
        end_checkpoints_early(app, flush.bound.full)
    return Processor(app=app, cassandra=writer, metrics=metrics)


# No checkpoint ended for this long (the main loop ends one every commit interval, idle or
# not): every thread's stack goes to stderr, the processor's log, to show where it hangs.
STALL_DUMP_S = 120.0


def _watching_stalls(observe: Callable[[float], None]) -> Callable[[float], None]:
    """``observe``, re-arming a stack dump of every thread ``STALL_DUMP_S`` from now (a
    diagnosis only: a stall seen on the cluster, with no log line, left no trace)."""

    def observed(seconds: float) -> None:
        observe(seconds)
        faulthandler.dump_traceback_later(STALL_DUMP_S, exit=False)

    return observed


def pipeline_config(settings: Settings) -> PipelineConfig:
    """What the topology takes from ``settings``."""
    return PipelineConfig(
        window_sizes_ms=settings.window_sizes_ms,
        grace_ms=settings.grace_ms,
        dedup_horizon_ms=settings.dedup_horizon_ms,
        dedup=settings.dedup,
        live_update_interval_s=settings.live_update_interval_s,
        max_future_skew_ms=settings.max_future_skew_ms,
        state_chunk_bytes=settings.state_chunk_bytes,
        max_emotes_per_window=settings.max_emotes_per_window,
        top_chatters_capacity=settings.top_chatters_capacity,
        deadletter_raw_max_bytes=settings.deadletter_raw_max_bytes,
        spike_rule=spike_rule(settings),
        moderation_horizon_ms=settings.moderation_horizon_ms,
        session_gap_ms=settings.session_gap_ms,
    )


def spike_rule(settings: Settings) -> SpikeRule | None:
    """The chat-spike rule of the settings; None when the spike window is not counted."""
    size = settings.spike_window_ms
    if size is None:
        return None
    return SpikeRule(
        size_ms=size,
        factor=settings.spike_factor,
        min_messages=settings.spike_min_messages,
        baseline_windows=settings.spike_baseline_windows,
    )


class _DropBatchSizeWarnings(logging.Filter):
    """The sink's batches are single-partition or small and bounded well below Cassandra's
    failure threshold on purpose; the server's per-batch size warning would flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Server warning: Batch for")


def _guard_state_dir(settings: Settings) -> None:
    """Move aside local state of another Kafka cluster (it would stop Quix at restore)."""
    admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_security_config())
    try:
        cluster_id = str(admin.describe_cluster(request_timeout=30).result().cluster_id)
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"could not read the Kafka cluster's id ({exc.args[0]}); start the processor "
            "again once Kafka answers"
        ) from None
    moved = check_state_dir(settings.state_dir, cluster_id)
    if moved is not None:
        logger.warning(
            "the state in %s belonged to another Kafka cluster: moved it to %s "
            "(the changelog topics rebuild it)",
            settings.state_dir,
            moved,
        )


def run_processor(settings: Settings) -> None:
    """Create topics and schema if missing, restore the group's offsets from the state if
    they are gone, serve metrics, and process until stopped (through Kafka outages:
    :func:`run_through_outages`)."""
    logging.getLogger("cassandra.protocol").addFilter(_DropBatchSizeWarnings())
    initialize(settings)
    _guard_state_dir(settings)
    metrics = ProcessorMetrics()
    messages = Topics.from_settings(settings).messages
    started = False

    def build() -> Processor:
        nonlocal started
        processor = build_processor(settings, metrics)
        if not started:
            restore_missing_offsets(
                settings.kafka_client_config(),
                settings.processor_group,
                messages,
                changelog_topic(processor.app, messages),
                admin_client(settings.kafka_bootstrap_servers, settings.kafka_security_config()),
            )
            processor.metrics.serve(settings.processor_metrics_port, settings.metrics_host)
            started = True
        logger.info(
            "processing %s as group %s (%s), windows %s, grace %s",
            messages,
            settings.processor_group,
            settings.processing_guarantee,
            ",".join(settings.windows),
            settings.grace,
        )
        rule = spike_rule(settings)
        if rule is None:
            logger.info(
                "no chat spikes: CHATPULSE_SPIKE_WINDOW=%s is not one of the windows",
                settings.spike_window,
            )
        else:
            logger.info(
                "chat spikes: %s windows above %s x the median of the previous %d, at least %d",
                settings.spike_window,
                rule.factor,
                rule.baseline_windows,
                rule.min_messages,
            )
        return processor

    run_through_outages(build)


def run_through_outages(
    build: Callable[[], Processor],
    *,
    sleep: Callable[[float], bool] | None = None,
) -> int:
    """Build and run the processor until it stops cleanly (SIGINT/SIGTERM); after a Kafka
    outage (:func:`is_kafka_outage`) build and run it again, in this process, after a backoff
    of 1 s doubling to 30 s; any other error propagates. Returns the restarts.

    A restart is what a crash and restart would be, without losing the process: the state
    stays in the state dir, the open transaction was aborted, and the messages since the
    last checkpoint are processed again (counted once: exactly-once). ``sleep`` waits and
    returns True when a stop was requested meanwhile (default: a wait that SIGINT/SIGTERM
    interrupt).
    """
    wait = sleep or _sleep_unless_signalled
    backoff = _RESTART_FIRST_S
    restarts = 0
    while True:
        try:
            build().run()
        except Exception as exc:
            if not is_kafka_outage(exc):
                raise
            logger.warning(
                "Kafka is unavailable (%s: %s); the processor starts its pipeline again in "
                "%.0f s, in this process (state kept, the last checkpoint's work redone)",
                type(exc).__name__,
                str(exc)[:300],
                backoff,
            )
            if wait(backoff):
                return restarts
            backoff = min(backoff * 2, _RESTART_MAX_S)
            restarts += 1
        else:
            return restarts


def _sleep_unless_signalled(seconds: float) -> bool:
    """Wait ``seconds``; True if SIGINT or SIGTERM arrived meanwhile.

    Quix's handlers would stop the application that failed, not this wait: these replace
    them meanwhile. (A signal during the next build reaches no one until ``run()``
    installs the new application's handlers: send it again.)"""
    stopped = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stopped.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return stopped.wait(seconds)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
