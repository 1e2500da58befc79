"""``chatpulse ingest``: read Twitch chat into Kafka until Ctrl-C or SIGTERM."""

import asyncio
import logging
import signal
from typing import Annotated

import typer

from chatpulse import provision
from chatpulse.errors import KafkaUnavailableError
from chatpulse.ingest.metrics import IngestMetrics
from chatpulse.ingest.service import IngestService, IngestSummary
from chatpulse.logs import configure_logging
from chatpulse.options import BootstrapServersOption, TopicPrefixOption
from chatpulse.settings import Settings, load_settings

__all__ = ["ingest_command", "run_ingest"]

logger = logging.getLogger(__name__)


def _topics_or_warn(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create the topics if missing (:func:`chatpulse.provision.ensure_topics`, their one home).

    When Kafka does not answer the ingest still starts: chat cannot wait, records are
    buffered and spilled until Kafka is back.
    """
    try:
        created = provision.ensure_topics(settings, wait_s=timeout_s)
    except KafkaUnavailableError as exc:
        logger.warning("%s; starting anyway (records are kept until it is back)", exc)
        return
    logger.info("Kafka topics ready (%d created)", len(created))


async def run_ingest(settings: Settings, *, flush_timeout_s: float = 15.0) -> IngestSummary:
    """Run the service until SIGINT or SIGTERM, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics = IngestMetrics()
    metrics.serve(settings.ingest_metrics_port, settings.metrics_host)
    service = IngestService(settings, flush_timeout_s=flush_timeout_s, metrics=metrics)
    try:
        return await service.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def ingest_command(
    *,
    channels: Annotated[
        str | None,
        typer.Option("--channels", help="Comma-separated channels to join [CHATPULSE_CHANNELS]"),
    ] = None,
    irc_url: Annotated[
        str | None,
        typer.Option(
            "--irc-url", help="ircs://host:port or irc://host:port [CHATPULSE_TWITCH_IRC_URL]"
        ),
    ] = None,
    bootstrap_servers: BootstrapServersOption = None,
    topic_prefix: TopicPrefixOption = None,
    flush_timeout: Annotated[
        float,
        typer.Option(
            "--flush-timeout", help="Seconds to wait for Kafka at shutdown before spilling to disk"
        ),
    ] = 15.0,
) -> None:
    """Read Twitch chat over IRC and produce every message and event to Kafka.

    Channels come from --channels and, live, from the tracked-channels topic.

    While Kafka is unreachable, records are kept in memory, then spilled to CHATPULSE_SPILL_DIR.

    They are sent in order once Kafka is back. Ctrl-C or SIGTERM stops reading, flushes, exits.
    """
    configure_logging()
    settings = load_settings(
        channels=channels,
        twitch_irc_url=irc_url,
        kafka_bootstrap_servers=bootstrap_servers,
        topic_prefix=topic_prefix,
    )
    _topics_or_warn(settings)
    asyncio.run(run_ingest(settings, flush_timeout_s=flush_timeout))
