"""Cassandra: connecting, and the schema the processor writes and the API reads.

Every table is written only by idempotent upserts keyed by what the numbers describe, never by
counters or appends: the processor's sinks run before its Kafka transaction commits, so after a
crash they replay, and a replayed write must land on the same row with the same value.

Tables (primary keys chosen for the API's queries):
- ``messages``: raw chat, partition (channel, day), newest first; TTL per write. A row is
  the consumed record itself (``record``: the ChatMessage JSON with its schema version ``v``)
  under the key columns the API queries by: the processor's driver binds five values per row
  instead of thirteen (about 6 µs instead of 10 on an idle core), and Cassandra stores one
  cell instead of nine; readers decode it with the same model the processor validated it with.
- ``window_stats``: one row per (channel, window size, window start), partition per UTC day of
  the window start so a partition stays bounded (1,440 one-minute rows a day).
- ``window_leaderboard``: all channels of one window (size, start) in one partition.
- ``latest_window``: newest window start per size, written ``USING TIMESTAMP`` of the start so
  the newest wins whatever order the writes land in.
- ``channel_totals``: total_messages, first_seen, last_seen per channel.
"""

import ssl

from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import DCAwareRoundRobinPolicy

from chatpulse.errors import SchemaError
from chatpulse.settings import Settings

__all__ = ["connect", "ensure_schema", "schema_statements"]


def schema_statements(keyspace: str, replication_factor: int = 1) -> list[str]:
    """The CQL that creates the keyspace and tables, idempotently."""
    ks = keyspace
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
        f"{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}",
        f"""CREATE TABLE IF NOT EXISTS {ks}.messages (
            channel text, day date, sent_at timestamp, id text, record blob,
            PRIMARY KEY ((channel, day), sent_at, id)
        ) WITH CLUSTERING ORDER BY (sent_at DESC, id DESC)""",
        f"""CREATE TABLE IF NOT EXISTS {ks}.window_stats (
            channel text, window text, day date, window_start timestamp,
            window_end timestamp, messages bigint, unique_chatters bigint,
            top_emotes text, closed boolean,
            PRIMARY KEY ((channel, window, day), window_start)
        ) WITH CLUSTERING ORDER BY (window_start DESC)""",
        f"""CREATE TABLE IF NOT EXISTS {ks}.window_leaderboard (
            window text, window_start timestamp, channel text,
            messages bigint, unique_chatters bigint,
            PRIMARY KEY ((window, window_start), channel)
        )""",
        f"""CREATE TABLE IF NOT EXISTS {ks}.latest_window (
            window text PRIMARY KEY, window_start timestamp
        )""",
        f"""CREATE TABLE IF NOT EXISTS {ks}.channel_totals (
            channel text PRIMARY KEY, total_messages bigint,
            first_seen timestamp, last_seen timestamp
        )""",
    ]


def connect(settings: Settings, *, connect_timeout: float = 10.0) -> tuple[Cluster, Session]:
    """Open a driver session (no keyspace set: statements name it). Caller shuts the cluster."""
    # An execution profile, not the legacy ``load_balancing_policy=`` argument: the driver warns
    # (DeprecationWarning, attributed to our module) about the legacy one.
    profile = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy())
    cluster = Cluster(
        contact_points=settings.cassandra_contact_points,
        port=settings.cassandra_port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=connect_timeout,
        # The driver's 2 s default for the control connection's schema queries times out on a
        # loaded 2-core machine (NoHostAvailable: OperationTimedOut) though Cassandra is up.
        control_connection_timeout=connect_timeout,
        # v4, not v5: this driver computes v5's checksummed framing (CRC24/CRC32 per
        # segment) in Python, 10-15% of the processor's time in Cassandra writes; Cassandra
        # 5.0 speaks both, and chatpulse uses nothing v5 adds.
        protocol_version=4,
        auth_provider=_auth_provider(settings),
        ssl_context=_ssl_context(settings),
    )
    return cluster, cluster.connect()


def _auth_provider(settings: Settings) -> PlainTextAuthProvider | None:
    if settings.cassandra_username is None or settings.cassandra_password is None:
        return None
    return PlainTextAuthProvider(
        username=settings.cassandra_username,
        password=settings.cassandra_password.get_secret_value(),
    )


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS to Cassandra when asked: the system's CAs, or the given CA file; hostnames checked."""
    if not settings.cassandra_ssl and settings.cassandra_ssl_ca_file is None:
        return None
    cafile = str(settings.cassandra_ssl_ca_file) if settings.cassandra_ssl_ca_file else None
    return ssl.create_default_context(cafile=cafile)


def ensure_schema(session: Session, settings: Settings) -> None:
    """Create the keyspace and tables if missing (safe to run any number of times).

    Raises :class:`SchemaError` when the keyspace holds a table of an older layout.
    """
    ks = settings.cassandra_keyspace
    for statement in schema_statements(ks, settings.cassandra_replication_factor):
        session.execute(statement, timeout=60)
    rows = session.execute(
        "SELECT column_name FROM system_schema.columns "
        "WHERE keyspace_name = %s AND table_name = 'messages'",
        (ks,),
        timeout=60,
    )
    if "record" not in {row.column_name for row in rows}:
        raise SchemaError(
            f"the keyspace {ks} holds a messages table of an older chatpulse layout "
            f"(no record column): drop it (DROP TABLE {ks}.messages) or set "
            "CHATPULSE_CASSANDRA_KEYSPACE to another keyspace"
        )
