"""``chatpulse process``: the stream processor's command (flags override the settings)."""

from pathlib import Path
from typing import Annotated

import typer

from chatpulse.logs import configure_logging
from chatpulse.options import (
    BootstrapServersOption,
    CassandraPortOption,
    KeyspaceOption,
    TopicPrefixOption,
)
from chatpulse.settings import load_settings

__all__ = ["process_command"]


def process_command(
    *,
    bootstrap_servers: BootstrapServersOption = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="Consumer group; instances sharing it share the partitions "
            "[CHATPULSE_PROCESSOR_GROUP]",
        ),
    ] = None,
    guarantee: Annotated[
        str | None,
        typer.Option(
            "--guarantee",
            help="exactly-once or at-least-once [CHATPULSE_PROCESSING_GUARANTEE]",
        ),
    ] = None,
    topic_prefix: TopicPrefixOption = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Local state (RocksDB) directory, one per instance [CHATPULSE_STATE_DIR]",
        ),
    ] = None,
    keyspace: KeyspaceOption = None,
    cassandra_port: CassandraPortOption = None,
    commit_interval: Annotated[
        float | None,
        typer.Option(
            "--commit-interval",
            help="Seconds between checkpoints (Kafka commit + Cassandra flush) "
            "[CHATPULSE_COMMIT_INTERVAL_S]",
        ),
    ] = None,
    windows: Annotated[
        str | None,
        typer.Option("--windows", help="Window sizes, e.g. 1m,10m,1h [CHATPULSE_WINDOWS]"),
    ] = None,
    grace: Annotated[
        str | None,
        typer.Option("--grace", help="Grace for out-of-order messages, e.g. 10s [CHATPULSE_GRACE]"),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", help="Prometheus port, 0 disables [CHATPULSE_PROCESSOR_METRICS_PORT]"
        ),
    ] = None,
) -> None:
    """Count chat per channel (de-duplicated, windowed, exactly once) into Cassandra and
    the channel-stats topic. Stops cleanly on Ctrl-C or SIGTERM."""
    configure_logging()
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap_servers,
        processor_group=group,
        processing_guarantee=guarantee,
        topic_prefix=topic_prefix,
        state_dir=state_dir,
        cassandra_keyspace=keyspace,
        cassandra_port=cassandra_port,
        commit_interval_s=commit_interval,
        windows=windows,
        grace=grace,
        processor_metrics_port=metrics_port,
    )
    # Imported here so `chatpulse --help` does not pay for Quix and the Cassandra driver.
    from chatpulse.processor.app import run_processor  # noqa: PLC0415

    run_processor(settings)
