"""Kafka topic names (with the configured prefix) and how ``init`` creates them."""

from dataclasses import dataclass, field

from chatpulse.settings import Settings

__all__ = ["TopicSpec", "Topics"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    setting: str | None = None  # the CHATPULSE_* variable that sets ``partitions``, if any


@dataclass(frozen=True, slots=True)
class Topics:
    """The contract's topics, prefixed with ``CHATPULSE_TOPIC_PREFIX``."""

    messages: str
    events: str
    stats: str
    tracked: str
    deadletter: str

    @classmethod
    def from_prefix(cls, prefix: str = "") -> "Topics":
        return cls(
            messages=f"{prefix}twitch-chat-messages",
            events=f"{prefix}twitch-chat-events",
            stats=f"{prefix}channel-stats",
            tracked=f"{prefix}tracked-channels",
            deadletter=f"{prefix}twitch-chat-deadletter",
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> "Topics":
        return cls.from_prefix(settings.topic_prefix)

    def specs(self, settings: Settings) -> list[TopicSpec]:
        """What ``init`` creates: partitions from the settings, compaction where keys are state."""
        week_ms = str(7 * 24 * 3600 * 1000)
        return [
            TopicSpec(
                self.messages,
                settings.messages_partitions,
                {"retention.ms": week_ms},
                "CHATPULSE_MESSAGES_PARTITIONS",
            ),
            TopicSpec(
                self.events,
                settings.events_partition_count,
                {"retention.ms": week_ms},
                "CHATPULSE_EVENTS_PARTITIONS",
            ),
            TopicSpec(
                self.stats,
                settings.stats_partitions,
                {"retention.ms": week_ms},
                "CHATPULSE_STATS_PARTITIONS",
            ),
            TopicSpec(self.tracked, 1, {"cleanup.policy": "compact"}),
            TopicSpec(self.deadletter, 1, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        ]
