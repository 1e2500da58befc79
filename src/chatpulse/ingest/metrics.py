"""Prometheus metrics of the ingest service, in a registry of its own.

A registry per service instance (not the global one) lets tests run several in one process.
"""

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

__all__ = ["IngestMetrics"]

logger = logging.getLogger(__name__)


class IngestMetrics:
    """The ingest's counters and gauges; ``serve(port)`` exposes them over HTTP."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.lines_received = Counter(
            "chatpulse_ingest_lines_received", "IRC lines read from Twitch", registry=r
        )
        self.records_sent = Counter(
            "chatpulse_ingest_records_sent",
            "records handed to the Kafka producer or the spill, by topic kind",
            ["kind"],
            registry=r,
        )
        self.produced = Counter(
            "chatpulse_ingest_produced",
            "records committed to Kafka (their transaction committed), by topic kind",
            ["kind"],
            registry=r,
        )
        self.delivery_failures = Counter(
            "chatpulse_ingest_delivery_failures",
            "delivery reports with an error (the transaction aborts; its records are sent again)",
            registry=r,
        )
        self.retried = Counter(
            "chatpulse_ingest_delivery_retries",
            "records produced again after their transaction aborted",
            registry=r,
        )
        self.spilled = Counter(
            "chatpulse_ingest_spilled", "records written to the on-disk spill", registry=r
        )
        self.unspilled = Counter(
            "chatpulse_ingest_unspilled",
            "records read back from the spill and produced",
            registry=r,
        )
        self.deadlettered = Counter(
            "chatpulse_ingest_deadlettered",
            "bad inputs sent to the dead-letter topic, by reason kind",
            ["kind"],
            registry=r,
        )
        self.spill_lost = Counter(
            "chatpulse_ingest_spill_lost",
            "records that could not be written to the spill (disk full): lost",
            registry=r,
        )
        self.deadletter_dropped = Counter(
            "chatpulse_ingest_deadletter_dropped",
            "dead-letter records the dead-letter topic itself refused (dropped, never retried)",
            registry=r,
        )
        self.buffered = Gauge(
            "chatpulse_ingest_buffered",
            "records in memory not yet committed to Kafka",
            registry=r,
        )
        self.spill_bytes = Gauge(
            "chatpulse_ingest_spill_bytes", "bytes in the on-disk spill", registry=r
        )
        self.channels = Gauge("chatpulse_ingest_channels", "channels wanted", registry=r)
        self.reconnects = Gauge(
            "chatpulse_ingest_irc_reconnects", "IRC reconnects since start", registry=r
        )
        self.duplicates_dropped = Gauge(
            "chatpulse_ingest_duplicates_dropped",
            "lines dropped as repeats across reconnect overlaps since start",
            registry=r,
        )
        self.connection_state = Gauge(
            "chatpulse_ingest_connection_state",
            "IRC connections: 1 while connected, 0 otherwise",
            ["connection"],
            registry=r,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on ``host:port`` (port 0 disables)."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)
            logger.info("metrics on http://%s:%d/metrics", host, port)
