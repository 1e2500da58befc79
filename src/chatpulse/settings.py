"""Settings: every ``CHATPULSE_*`` variable, read from the environment and ``.env``.

Built once at a command's start by :func:`load_settings` (never at import time, so tests can
set the environment first). An invalid value stops the program with one line naming it.
"""

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from chatpulse.errors import ConfigError
from chatpulse.models import normalize_channel
from chatpulse.windows import parse_duration

__all__ = ["Settings", "load_settings"]

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "chatpulse"


class Settings(BaseSettings):
    """All of chatpulse's settings; see the README's configuration table."""

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

    # Topic layout (used by ``init``; partitions are the unit of parallelism)
    messages_partitions: int = Field(default=6, ge=1)
    events_partitions: int = Field(default=3, ge=1)
    stats_partitions: int = Field(default=6, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)

    # Ingest
    twitch_irc_url: str = "ircs://irc.chat.twitch.tv:6697"
    twitch_login: str | None = None
    twitch_token: SecretStr | None = None
    channels: CommaList = Field(default_factory=list)
    join_rate: int = Field(default=20, ge=1, description="JOINs allowed per join_window_s")
    join_window_s: float = Field(default=10.0, gt=0)
    channels_per_connection: int = Field(default=90, ge=1)
    ingest_buffer_messages: int = Field(default=100_000, ge=1)
    spill_dir: Path = Field(default_factory=lambda: _default_data_dir() / "spill")
    ingest_metrics_port: int = Field(default=9101, ge=0, le=65535)

    # Processor
    processor_group: str = "chatpulse-processor"
    processing_guarantee: Literal["exactly-once", "at-least-once"] = "exactly-once"
    windows: CommaList = Field(default_factory=lambda: ["1m", "10m", "1h"])
    grace: str = "10s"
    dedup_horizon: str = "1h"
    commit_interval_s: float = Field(default=1.0, gt=0)
    live_update_interval_s: float = Field(default=1.0, ge=0)
    message_ttl_days: int = Field(default=30, ge=1)
    state_dir: Path = Field(default_factory=lambda: _default_data_dir() / "state")
    processor_metrics_port: int = Field(default=9102, ge=0, le=65535)

    # API
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_key: SecretStr | None = None

    @field_validator("cassandra_contact_points", "channels", "windows", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

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

    @field_validator("grace", "dedup_horizon")
    @classmethod
    def _durations(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("twitch_irc_url")
    @classmethod
    def _irc_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("irc", "ircs") or not parts.hostname:
            raise ValueError("use ircs://host:port (TLS) or irc://host:port (plain TCP)")
        return value

    @property
    def grace_ms(self) -> int:
        return parse_duration(self.grace)

    @property
    def dedup_horizon_ms(self) -> int:
        return parse_duration(self.dedup_horizon)

    @property
    def window_sizes_ms(self) -> list[int]:
        return [parse_duration(size) for size in self.windows]


def load_settings(**overrides: Any) -> Settings:
    """Read the settings (CLI overrides win); raise ConfigError naming the first bad one."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid setting CHATPULSE_{field.upper()}: {message}") from None
