"""Settings: every ``CHATPULSE_*`` variable, read from the environment and ``.env``.

Built once at a command's start by :func:`load_settings` (never at import time, so tests can
set the environment first). An invalid value stops the program with one line naming it.
"""

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from chatpulse.deadletter import DEFAULT_RAW_MAX_BYTES
from chatpulse.errors import ConfigError
from chatpulse.models import normalize_channel
from chatpulse.tls import check_key_pair, readable_file
from chatpulse.transactional import default_instance_id
from chatpulse.windows import parse_duration

__all__ = ["Settings", "load_settings"]

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# Settings naming a file chatpulse reads: it must exist and be readable at start.
_FILE_SETTINGS = (
    "kafka_ssl_ca_location",
    "kafka_ssl_cert_location",
    "kafka_ssl_key_location",
    "cassandra_ssl_ca_file",
    "cassandra_ssl_cert_file",
    "cassandra_ssl_key_file",
    "api_tls_cert",
    "api_tls_key",
)
# Certificate, key and key password settings that go together.
_KEY_PAIRS = (
    ("kafka_ssl_cert_location", "kafka_ssl_key_location", "kafka_ssl_key_password"),
    ("cassandra_ssl_cert_file", "cassandra_ssl_key_file", "cassandra_ssl_key_password"),
    ("api_tls_cert", "api_tls_key", "api_tls_key_password"),
)


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "chatpulse"


class Settings(BaseSettings):
    """All of chatpulse's settings; each is listed in docs/operations.md, "Settings"."""

    model_config = SettingsConfigDict(
        env_prefix="CHATPULSE_",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    # Clusters
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    cassandra_contact_points: CommaList = Field(default_factory=lambda: ["127.0.0.1"])
    cassandra_port: int = Field(default=9042, ge=1, le=65535)
    cassandra_keyspace: str = Field(default="chatpulse", pattern=r"^[a-zA-Z][a-zA-Z0-9_]{0,47}$")
    cassandra_replication_factor: int = Field(default=1, ge=1)
    # Consistency of every read and write of the processor and the API. LOCAL_QUORUM: a
    # majority of the replicas in the local datacenter (2 of 3: one node may be down; the one
    # replica of a single node).
    cassandra_consistency: Literal[
        "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE"
    ] = "LOCAL_QUORUM"
    # Sends of one processor write (an idempotent upsert) before a transient failure (a write
    # timeout of a loaded cluster) fails the checkpoint's flush; docs/operations.md, "Limits".
    cassandra_write_attempts: int = Field(default=3, ge=1, le=10)

    # Security of the cluster connections (defaults: plaintext, no auth, as a local stack)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = None
    # A client certificate (mTLS) for brokers that ask for one (PEM files).
    kafka_ssl_cert_location: Path | None = None
    kafka_ssl_key_location: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    cassandra_username: str | None = None
    cassandra_password: SecretStr | None = None
    cassandra_ssl: bool = False
    cassandra_ssl_ca_file: Path | None = None
    cassandra_ssl_cert_file: Path | None = None
    cassandra_ssl_key_file: Path | None = None
    cassandra_ssl_key_password: SecretStr | None = None
    # Off: the node's certificate is still checked against the CA, but not that it names the
    # address connected to (the driver compares it with the node's IP, not a host name).
    cassandra_ssl_verify_hostname: bool = True

    # Topic layout (used by ``init``; partitions are the unit of parallelism)
    messages_partitions: int = Field(default=6, ge=1)
    # twitch-chat-events is joined with twitch-chat-messages by channel (the moderation
    # join): both must have the same partitions. Unset: as many as the messages topic.
    events_partitions: int | None = Field(default=None, ge=1)
    stats_partitions: int = Field(default=6, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    # Part of the ingest's and the processor's Kafka transactional ids (chatpulse.transactional):
    # set it to a stable name where the host name changes at each start (containers).
    instance_id: str = Field(
        default_factory=default_instance_id, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
    )
    # Dead-letter records keep at most this many bytes of the raw input (chatpulse.deadletter).
    deadletter_raw_max_bytes: int = Field(default=DEFAULT_RAW_MAX_BYTES, ge=64, le=512 * 1024)

    # Ingest
    twitch_irc_url: str = "ircs://irc.chat.twitch.tv:6697"
    twitch_login: str | None = None
    twitch_token: SecretStr | None = None
    channels: CommaList = Field(default_factory=list)
    join_rate: int = Field(default=20, ge=1, description="JOINs allowed per join_window_s")
    join_window_s: float = Field(default=10.0, gt=0)
    channels_per_connection: int = Field(default=90, ge=1)
    ingest_buffer_messages: int = Field(default=100_000, ge=1)
    # A producer that failed fatally but not by fencing or a refused permission is replaced by a
    # new one at most this many times in any 10 minutes (0: never); past it the ingest stops.
    ingest_producer_replacements: int = Field(default=3, ge=0, le=100)
    # A longer IRC line is dead-lettered (cut) and skipped; Twitch's longest are a few KB.
    irc_max_line_bytes: int = Field(default=65_536, ge=1_024, le=16 * 1024 * 1024)
    spill_dir: Path = Field(default_factory=lambda: _default_data_dir() / "spill")
    ingest_metrics_port: int = Field(default=9101, ge=0, le=65535)

    # Processor
    processor_group: str = "chatpulse-processor"
    processing_guarantee: Literal["exactly-once", "at-least-once"] = "exactly-once"
    windows: CommaList = Field(default_factory=lambda: ["1m", "10m", "1h"])
    grace: str = "10s"
    dedup_horizon: str = "1h"
    # How long the moderation join keeps a channel's messages (to find what a CLEARMSG or a
    # CLEARCHAT targets) and its actions (for messages read after them), in channel time.
    moderation_horizon: str = "10m"
    # A checkpoint commit blocked this long restarts the processor process (exec), as a
    # crash would (chatpulse.processor.watchdog: a known librdkafka hang); 0: never.
    commit_stall_restart_s: float = Field(default=120.0, ge=0)
    # A chatter's session ends after this long without a message of theirs in the channel
    # (whole seconds); "off": sessions are not counted (no per-chatter state is kept).
    session_gap: str = "10m"
    # Off: every message counts, a repeated id too (``chatpulse lab exactly-once`` turns it off
    # so that what it shows is the processing guarantee alone). Keep it on in production.
    dedup: bool = True
    # A message stamped further ahead of the receiving clock than this is dead-lettered (ingest
    # and processor): Kafka refuses records over 1 h ahead, and one would open windows early.
    max_future_skew: str = "5m"
    # Results become visible at each checkpoint: 0.5 s keeps the time from chat to Cassandra
    # under 2 s at the 99th percentile at 5k msg/s (bench/processor.py), and cost no
    # throughput there against 1 s (a backlog's checkpoints are longer anyway).
    commit_interval_s: float = Field(default=0.5, gt=0)
    live_update_interval_s: float = Field(default=1.0, ge=0)
    # Largest state value the processor writes (a chunk of a window's chatters, a part of a
    # de-duplication bucket): Kafka refuses changelog records over 1 MB. At least one full
    # roaring container (8 KiB) twice over.
    state_chunk_bytes: int = Field(default=65_536, ge=16_448, le=524_288)
    # Distinct emotes counted per window (their counts live in the channel's state record,
    # at most ~140 bytes each): a busy channel shows a few hundred in an hour; top_emotes
    # needs the 10 most used.
    max_emotes_per_window: int = Field(default=300, ge=10, le=2_000)
    # Counters of a window's top-chatters summary (Space-Saving): exact while a window's
    # distinct chatters fit, bounded error past it; at most ~90 bytes each in the state, and
    # the state record of a window must stay well under Kafka's 1 MB.
    top_chatters_capacity: int = Field(default=1_000, ge=20, le=5_000)
    # Chat spikes (chatpulse.processor.spikes): a closed window of spike_window whose count is
    # at least spike_min_messages and above spike_factor x the median of the channel's previous
    # spike_baseline_windows windows. The baseline is a ring of that many counts per channel in
    # the state (8 bytes each at most). Off (said at start) when spike_window is not one of
    # the windows: a child process gets every setting, so this cannot be an error.
    spike_window: str = "1m"
    spike_factor: float = Field(default=3.0, ge=1.0, le=100.0)
    spike_min_messages: int = Field(default=20, ge=1)
    spike_baseline_windows: int = Field(default=30, ge=3, le=1_440)
    # The processor stores each message twice: under its channel's minute (recent messages,
    # search) and in its user's history (``user_messages``, one more Cassandra partition per
    # message, the biggest single share of its writing). Off: no history rows are written and
    # the API answers its history endpoint with 404. Give the processor and the API the same.
    user_history: bool = True
    # Each message's words in a set with a Storage-Attached Index, for search. Off: none are
    # stored or indexed, and the API answers a search (``q``) with 404. Same for both services.
    search_index: bool = True
    # Raw messages live this long in Cassandra. At most a year: a channel's list of non-empty
    # minutes (``message_buckets``, one partition per channel) holds up to 1,440 rows per day.
    message_ttl_days: int = Field(default=30, ge=1, le=366)
    # Window statistics and leaderboards live this long (Cassandra refuses TTLs over 20 years).
    stats_ttl_days: int = Field(default=90, ge=1, le=3650)
    state_dir: Path = Field(default_factory=lambda: _default_data_dir() / "state")
    processor_metrics_port: int = Field(default=9102, ge=0, le=65535)

    # Prometheus endpoints of ingest and process (the API serves /metrics on its own port)
    metrics_host: str = "127.0.0.1"

    # API
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_key: SecretStr | None = None
    # HTTPS when both are set (PEM files; the certificate file may hold the chain).
    api_tls_cert: Path | None = None
    api_tls_key: Path | None = None
    api_tls_key_password: SecretStr | None = None
    # Bounds under anonymous load (docs/operations.md, "Limits"). The only body the API takes
    # is the channel POST's ``{"channel": ...}``, a few dozen bytes.
    api_max_body_bytes: int = Field(default=4096, ge=64)
    api_cache_max_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    # A read Cassandra cannot answer in time (a node just died) is answered from the cache's
    # copy if it is at most this old, with ``Age`` (RFC 5861 stale-if-error; 0: never).
    api_stale_if_error_s: float = Field(default=30.0, ge=0, le=3600)
    api_max_live_connections: int = Field(default=500, ge=1)
    # /readyz answers from a copy at most this old: a flood of probes costs one check per period.
    api_readiness_ttl_s: float = Field(default=1.0, ge=0)
    # Each API read (all SELECTs, idempotent) is sent again to another Cassandra node when no
    # answer came after this long, at most this many more times (0: never), within the
    # request's 2 s timeout: a node that died keeps being asked by its peers until gossip
    # convicts it (seconds), and a read waiting on it would otherwise end in a 503.
    api_speculative_delay_s: float = Field(default=0.4, gt=0, le=1.5)
    api_speculative_executions: int = Field(default=2, ge=0, le=5)

    @field_validator("cassandra_contact_points", "channels", "windows", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator(*_FILE_SETTINGS)
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return None if value is None else readable_file(value)

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(normalize_channel(name) for name in value))

    @field_validator("windows")
    @classmethod
    def _window_sizes(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one window size is needed")
        for size in value:
            parse_duration(size)
        return value

    @field_validator(
        "grace", "dedup_horizon", "max_future_skew", "spike_window", "moderation_horizon"
    )
    @classmethod
    def _durations(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("session_gap")
    @classmethod
    def _session_gap(cls, value: str) -> str:
        if value.strip().lower() != "off" and parse_duration(value) % 1000:
            raise ValueError(f"{value!r} is not a whole number of seconds (or use off)")
        return value

    @field_validator("twitch_irc_url")
    @classmethod
    def _irc_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("irc", "ircs") or not parts.hostname:
            raise ValueError("use ircs://host:port (TLS) or irc://host:port (plain TCP)")
        return value

    @model_validator(mode="after")
    def _events_copartitioned(self) -> "Settings":
        if self.events_partitions is not None and self.events_partitions != (
            self.messages_partitions
        ):
            raise ValueError(
                f"CHATPULSE_EVENTS_PARTITIONS ({self.events_partitions}) must equal "
                f"CHATPULSE_MESSAGES_PARTITIONS ({self.messages_partitions}): the processor "
                "joins the two topics by channel, so they are co-partitioned (leave it unset)"
            )
        return self

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> "Settings":
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"CHATPULSE_KAFKA_SASL_USERNAME and CHATPULSE_KAFKA_SASL_PASSWORD are required "
                f"with CHATPULSE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
            )
        if (self.cassandra_username is None) != (self.cassandra_password is None):
            raise ValueError(
                "set both CHATPULSE_CASSANDRA_USERNAME and CHATPULSE_CASSANDRA_PASSWORD, or neither"
            )
        if self.kafka_ssl_cert_location is not None and not self.kafka_security_protocol.endswith(
            "SSL"
        ):
            raise ValueError(
                "CHATPULSE_KAFKA_SSL_CERT_LOCATION needs CHATPULSE_KAFKA_SECURITY_PROTOCOL=SSL "
                "or SASL_SSL"
            )
        for cert, key, password in _KEY_PAIRS:
            _check_pair(self, cert, key, password)
        return self

    def kafka_security_config(self) -> dict[str, str]:
        """librdkafka properties for the configured security (empty for plaintext)."""
        config: dict[str, str] = {}
        if self.kafka_security_protocol != "PLAINTEXT":
            config["security.protocol"] = self.kafka_security_protocol
        if self.kafka_security_protocol.startswith("SASL_"):
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username or ""
            password = self.kafka_sasl_password
            config["sasl.password"] = password.get_secret_value() if password else ""
        if self.kafka_ssl_ca_location is not None:
            config["ssl.ca.location"] = str(self.kafka_ssl_ca_location)
        if self.kafka_ssl_cert_location is not None:
            config["ssl.certificate.location"] = str(self.kafka_ssl_cert_location)
        if self.kafka_ssl_key_location is not None:
            config["ssl.key.location"] = str(self.kafka_ssl_key_location)
        if self.kafka_ssl_key_password is not None:
            config["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        return config

    def kafka_client_config(self) -> dict[str, str]:
        """``bootstrap.servers`` plus the security properties: the base of every Kafka client."""
        return {"bootstrap.servers": self.kafka_bootstrap_servers, **self.kafka_security_config()}

    def as_environment(self) -> dict[str, str]:
        """These settings as ``CHATPULSE_*`` variables, for a child process (secrets included)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                text = value.get_secret_value()
            elif isinstance(value, list):
                text = ",".join(value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            env[f"CHATPULSE_{name.upper()}"] = text
        return env

    @property
    def grace_ms(self) -> int:
        return parse_duration(self.grace)

    @property
    def dedup_horizon_ms(self) -> int:
        return parse_duration(self.dedup_horizon)

    @property
    def moderation_horizon_ms(self) -> int:
        return parse_duration(self.moderation_horizon)

    @property
    def session_gap_ms(self) -> int:
        """The session gap in ms, 0 when sessions are off."""
        if self.session_gap.strip().lower() == "off":
            return 0
        return parse_duration(self.session_gap)

    @property
    def events_partition_count(self) -> int:
        """Partitions of twitch-chat-events: the messages topic's (co-partitioned)."""
        return self.events_partitions or self.messages_partitions

    @property
    def max_future_skew_ms(self) -> int:
        return parse_duration(self.max_future_skew)

    @property
    def window_sizes_ms(self) -> list[int]:
        return [parse_duration(size) for size in self.windows]

    @property
    def spike_window_ms(self) -> int | None:
        """The size of the windows checked for spikes; None (no spikes) when it is not one of
        the windows."""
        size = parse_duration(self.spike_window)
        return size if size in self.window_sizes_ms else None


def _env(name: str) -> str:
    return f"CHATPULSE_{name.upper()}"


def _check_pair(settings: Settings, cert: str, key: str, password: str) -> None:
    """Both files of a certificate pair or neither, a password only with a key, and a key that
    opens with it and belongs to the certificate."""
    cert_path, key_path = getattr(settings, cert), getattr(settings, key)
    if (cert_path is None) != (key_path is None):
        raise ValueError(f"set both {_env(cert)} and {_env(key)}, or neither")
    secret = getattr(settings, password)
    if secret is not None and key_path is None:
        raise ValueError(f"{_env(password)} is set without {_env(key)}")
    if cert_path is not None:
        check_key_pair(cert_path, key_path, secret, names=(_env(cert), _env(key), _env(password)))


def load_settings(**overrides: Any) -> Settings:
    """Read the settings (CLI overrides win); raise ConfigError naming the first bad one."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # a rule across settings: its message names them
            raise ConfigError(f"invalid settings: {message}") from None
        field = str(error["loc"][0])
        raise ConfigError(f"invalid setting CHATPULSE_{field.upper()}: {message}") from None
