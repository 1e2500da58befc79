"""Cassandra: connecting, and the schema the processor writes and the API reads.

Every table is written only by idempotent upserts keyed by what the numbers describe, never by
counters or appends: the processor's sinks run before its Kafka transaction commits, so after a
crash they replay, and a replayed write must land on the same row with the same value.

Tables (primary keys chosen for the API's queries):
- ``messages_bucketed``: raw chat, partition (channel, minute bucket of ``sent_at``; see
  :mod:`chatpulse.buckets`), newest first; TTL per write (``CHATPULSE_MESSAGE_TTL_DAYS``).
  A partition holds one minute of one channel, so no partition grows with a channel's
  history (a day's partition held 4.3M rows at 50 msg/s). A row is the consumed record
  itself (``record``: the ChatMessage JSON with its schema version ``v``) under the key
  columns the API queries by: the processor serialises five values per row, and Cassandra
  stores one cell instead of nine; readers decode it with the same model the processor
  validated it with. ``words``: the message's words (:mod:`chatpulse.words`), a set with a
  Storage-Attached Index, for the API's search. ``deleted``: true once the moderation join
  found a CLEARMSG or CLEARCHAT that deletes the message (written with the TTL the row has
  left, so it never outlives the record).
- ``message_buckets``: per channel, the buckets that hold messages, newest first (same TTL),
  so a reader skips empty minutes instead of querying each.
- ``user_messages``: the same records again, partition (channel, user login, UTC day of
  ``sent_at``), newest first, same TTL: one user's history in a channel (justlog's query)
  reads the user's day partitions, not the channel's.
- ``window_stats``: one row per (channel, window size, window start), partition per UTC day of
  the window start so a partition stays bounded (1,440 one-minute rows a day); TTL per write
  (``CHATPULSE_STATS_TTL_DAYS``). ``top_emotes`` and ``top_chatters`` are JSON lists;
  ``deleted_messages``, ``timeouts``, ``bans`` count the window's moderation events;
  ``sessions_started``, ``sessions_ended``, ``session_mean_s``, ``session_p90_s`` its chatter
  sessions (:mod:`chatpulse.processor.sessions`; a window may have ended sessions and no
  message).
- ``window_leaderboard``: all channels of one window (size, start) in one partition; same TTL.
- ``latest_window``: newest window start per size, written ``USING TIMESTAMP`` of the start so
  the newest wins whatever order the writes land in.
- ``channel_totals``: total_messages, first_seen, last_seen per channel.
- ``chat_spikes``: the channel's chat spikes (:mod:`chatpulse.processor.spikes`), partition
  per channel, newest first, one row per spike window (keyed by its start: a replay writes
  the same row again); TTL ``CHATPULSE_STATS_TTL_DAYS``, so a partition holds at most one row
  per spike-size window of the TTL (spikes are rare: a few a day in a lively channel).

``messages`` (partition (channel, day)) was the raw chat table before ``messages_bucketed``:
nothing reads or writes it any more, and ``ensure_schema`` leaves one it finds alone
(docs/operations.md says how to drop it).
"""

import re
import ssl

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import DCAwareRoundRobinPolicy

from chatpulse.errors import SchemaError
from chatpulse.settings import Settings
from chatpulse.tls import client_context

__all__ = ["connect", "ensure_schema", "execution_profile", "schema_statements", "ssl_context"]


def schema_statements(keyspace: str, replication_factor: int = 1) -> list[str]:
    """The CQL that creates the keyspace and tables, idempotently."""
    ks = keyspace
    return [
        # NetworkTopologyStrategy with 'replication_factor': that many replicas in every
        # datacenter (Cassandra 4.0+ expands it), placed on distinct racks where there are
        # some; what LOCAL_QUORUM needs. SimpleStrategy ignores racks and datacenters.
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
        f"{{'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}}",
        f"""CREATE TABLE IF NOT EXISTS {ks}.messages_bucketed (
            channel text, bucket timestamp, sent_at timestamp, id text, record blob,
            PRIMARY KEY ((channel, bucket), sent_at, id)
        ) WITH CLUSTERING ORDER BY (sent_at DESC, id DESC)""",
        f"ALTER TABLE {ks}.messages_bucketed ADD IF NOT EXISTS words set<text>",
        # set by the moderation join (a CLEARMSG or a CLEARCHAT deleted the message)
        f"ALTER TABLE {ks}.messages_bucketed ADD IF NOT EXISTS deleted boolean",
        # Storage-Attached Index of each message's words (chatpulse.words): a search asks for
        # ``words CONTAINS ?`` within one (channel, minute) partition at a time
        f"CREATE INDEX IF NOT EXISTS messages_bucketed_words ON {ks}.messages_bucketed "
        "(VALUES(words)) USING 'sai'",
        f"""CREATE TABLE IF NOT EXISTS {ks}.message_buckets (
            channel text, bucket timestamp,
            PRIMARY KEY (channel, bucket)
        ) WITH CLUSTERING ORDER BY (bucket DESC)""",
        f"""CREATE TABLE IF NOT EXISTS {ks}.user_messages (
            channel text, user_login text, bucket timestamp, sent_at timestamp, id text,
            record blob,
            PRIMARY KEY ((channel, user_login, bucket), sent_at, id)
        ) WITH CLUSTERING ORDER BY (sent_at DESC, id DESC)""",
        f"ALTER TABLE {ks}.user_messages ADD IF NOT EXISTS deleted boolean",
        f"""CREATE TABLE IF NOT EXISTS {ks}.window_stats (
            channel text, window text, day date, window_start timestamp,
            window_end timestamp, messages bigint, unique_chatters bigint,
            top_emotes text, closed boolean, top_chatters text,
            PRIMARY KEY ((channel, window, day), window_start)
        ) WITH CLUSTERING ORDER BY (window_start DESC)""",
        # a table made by an older chatpulse gets the column (Cassandra 5.0 takes IF NOT EXISTS)
        f"ALTER TABLE {ks}.window_stats ADD IF NOT EXISTS top_chatters text",
        f"ALTER TABLE {ks}.window_stats ADD IF NOT EXISTS deleted_messages bigint",
        f"ALTER TABLE {ks}.window_stats ADD IF NOT EXISTS timeouts bigint",
        f"ALTER TABLE {ks}.window_stats ADD IF NOT EXISTS bans bigint",
        f"ALTER TABLE {ks}.window_stats ADD IF NOT EXISTS sessions_started bigint",
        f"ALTER TABLE {ks}.window_stats ADD IF NOT EXISTS sessions_ended bigint",
        f"ALTER TABLE {ks}.window_stats ADD IF NOT EXISTS session_mean_s double",
        f"ALTER TABLE {ks}.window_stats ADD IF NOT EXISTS session_p90_s bigint",
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
        f"""CREATE TABLE IF NOT EXISTS {ks}.chat_spikes (
            channel text, window_start timestamp, window text, window_end timestamp,
            messages bigint, baseline_median double, factor double,
            PRIMARY KEY (channel, window_start)
        ) WITH CLUSTERING ORDER BY (window_start DESC)""",
    ]


def execution_profile(settings: Settings) -> ExecutionProfile:
    """The driver profile of every chatpulse session: ``CHATPULSE_CASSANDRA_CONSISTENCY`` for
    each read and write (the processor's and the API's), local datacenter first."""
    return ExecutionProfile(
        load_balancing_policy=DCAwareRoundRobinPolicy(),
        consistency_level=ConsistencyLevel.name_to_value[settings.cassandra_consistency],
    )


def connect(settings: Settings, *, connect_timeout: float = 10.0) -> tuple[Cluster, Session]:
    """Open a driver session (no keyspace set: statements name it). Caller shuts the cluster."""
    # An execution profile, not the legacy ``load_balancing_policy=`` argument: the driver warns
    # (DeprecationWarning, attributed to our module) about the legacy one.
    profile = execution_profile(settings)
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
        ssl_context=ssl_context(settings),
    )
    return cluster, cluster.connect()


def _auth_provider(settings: Settings) -> PlainTextAuthProvider | None:
    if settings.cassandra_username is None or settings.cassandra_password is None:
        return None
    return PlainTextAuthProvider(
        username=settings.cassandra_username,
        password=settings.cassandra_password.get_secret_value(),
    )


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS to Cassandra when asked (or a CA or client certificate is given): the system's CAs
    or the given CA file, the client certificate if set.

    With CHATPULSE_CASSANDRA_SSL_VERIFY_HOSTNAME on, the driver checks that a node's
    certificate names the address it connected to (the node's IP, as the cluster lists it).
    """
    if not (
        settings.cassandra_ssl
        or settings.cassandra_ssl_ca_file is not None
        or settings.cassandra_ssl_cert_file is not None
    ):
        return None
    return client_context(
        ca_file=settings.cassandra_ssl_ca_file,
        cert=settings.cassandra_ssl_cert_file,
        key=settings.cassandra_ssl_key_file,
        password=settings.cassandra_ssl_key_password,
        verify_hostname=settings.cassandra_ssl_verify_hostname,
    )


# The columns chatpulse reads or writes in each table: a table of that name made otherwise
# (by hand, or by a future layout) is reported by ``ensure_schema`` rather than failing every
# write of the processor later.
_COLUMNS = {
    "messages_bucketed": {"channel", "bucket", "sent_at", "id", "record", "words", "deleted"},
    "message_buckets": {"channel", "bucket"},
    "user_messages": {"channel", "user_login", "bucket", "sent_at", "id", "record", "deleted"},
    "window_stats": {
        "channel",
        "window",
        "day",
        "window_start",
        "window_end",
        "messages",
        "unique_chatters",
        "top_emotes",
        "closed",
        "top_chatters",
        "deleted_messages",
        "timeouts",
        "bans",
        "sessions_started",
        "sessions_ended",
        "session_mean_s",
        "session_p90_s",
    },
    "window_leaderboard": {"window", "window_start", "channel", "messages", "unique_chatters"},
    "latest_window": {"window", "window_start"},
    "channel_totals": {"channel", "total_messages", "first_seen", "last_seen"},
    "chat_spikes": {
        "channel",
        "window_start",
        "window",
        "window_end",
        "messages",
        "baseline_median",
        "factor",
    },
}


_CREATED_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS \w+\.(\w+)")
# a column added to a table of an older chatpulse, and an index: run only when missing too
_ADDED_COLUMN = re.compile(r"ALTER TABLE \w+\.(\w+) ADD IF NOT EXISTS (\w+)")
_CREATED_INDEX = re.compile(r"CREATE INDEX IF NOT EXISTS (\w+) ON")


def ensure_schema(session: Session, settings: Settings) -> None:
    """Create the keyspace and tables if missing (safe to run any number of times, also on a
    keyspace of an older chatpulse: tables of an older layout have other names).

    Raises :class:`SchemaError` when a table of the keyspace lacks a column chatpulse uses.
    """
    ks = settings.cassandra_keyspace
    # DDL only for what is missing: a role that may read and write the keyspace but not
    # change its schema (the processor's on a secured cluster) starts on an existing one.
    keyspace_exists = (
        session.execute(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s",
            (ks,),
            timeout=60,
        ).one()
        is not None
    )
    tables = {
        row.table_name
        for row in session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
            (ks,),
            timeout=60,
        )
    }
    columns_before = _columns(session, ks)
    indexes = {
        row.index_name
        for row in session.execute(
            "SELECT index_name FROM system_schema.indexes WHERE keyspace_name = %s",
            (ks,),
            timeout=60,
        )
    }
    for statement in schema_statements(ks, settings.cassandra_replication_factor):
        if created := _CREATED_TABLE.match(statement):
            missing = created.group(1) not in tables
        elif added := _ADDED_COLUMN.match(statement):
            missing = added.group(2) not in columns_before.get(added.group(1), set())
        elif index := _CREATED_INDEX.match(statement):
            missing = index.group(1) not in indexes
        else:
            missing = not keyspace_exists
        if missing:
            session.execute(statement, timeout=60)
    found = _columns(session, ks)
    for table, columns in _COLUMNS.items():
        missing_columns = sorted(columns - found.get(table, set()))
        if missing_columns:
            raise SchemaError(
                f"the table {ks}.{table} lacks the column(s) {', '.join(missing_columns)} that "
                f"chatpulse uses: drop it (DROP TABLE {ks}.{table}) to let chatpulse create "
                "it, or set CHATPULSE_CASSANDRA_KEYSPACE to another keyspace"
            )


def _columns(session: Session, ks: str) -> dict[str, set[str]]:
    """The keyspace's tables and their columns."""
    rows = session.execute(
        "SELECT table_name, column_name FROM system_schema.columns WHERE keyspace_name = %s",
        (ks,),
        timeout=60,
    )
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row.table_name, set()).add(row.column_name)
    return found
