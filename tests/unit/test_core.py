"""Core pieces: settings, window maths, wire models."""

import os
from pathlib import Path

import msgspec
import pytest
from cassandra.auth import PlainTextAuthProvider

from chatpulse.errors import ConfigError
from chatpulse.models import ChatMessage, Emote, decode_chat_message, encode, normalize_channel
from chatpulse.settings import load_settings
from chatpulse.storage import _auth_provider, ssl_context
from chatpulse.topics import Topics
from chatpulse.windows import format_duration, parse_duration, window_start


def test_durations_round_trip() -> None:
    assert parse_duration("1m") == 60_000
    assert parse_duration("10m") == 600_000
    assert parse_duration("1h") == 3_600_000
    assert format_duration(600_000) == "10m"
    assert format_duration(1500) == "1500ms"
    for bad in ("", "0m", "1y", "m", "-1m"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_windows_are_epoch_aligned() -> None:
    assert window_start(1_568_000_059_999, 60_000) == 1_568_000_040_000
    assert window_start(1_568_000_040_000, 60_000) == 1_568_000_040_000


def test_channel_names() -> None:
    assert normalize_channel("#XQcOW") == "xqcow"
    for bad in ("", "a" * 26, "bad-name", "#", "naïve"):
        with pytest.raises(ValueError, match="not a Twitch channel"):
            normalize_channel(bad)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPULSE_CHANNELS", "Foo, #bar,foo")
    monkeypatch.setenv("CHATPULSE_CASSANDRA_CONTACT_POINTS", "10.0.0.1,10.0.0.2")
    monkeypatch.setenv("CHATPULSE_TOPIC_PREFIX", "t1-")
    settings = load_settings()
    assert settings.channels == ["foo", "bar"]
    assert settings.cassandra_contact_points == ["10.0.0.1", "10.0.0.2"]
    assert Topics.from_settings(settings).messages == "t1-twitch-chat-messages"
    assert settings.window_sizes_ms == [60_000, 600_000, 3_600_000]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHATPULSE_CASSANDRA_PORT", "nine"),
        ("CHATPULSE_TWITCH_IRC_URL", "http://example.com"),
        ("CHATPULSE_WINDOWS", "1m,ten"),
        ("CHATPULSE_CHANNELS", "ok,not ok"),
        ("CHATPULSE_PROCESSING_GUARANTEE", "maybe"),
        ("CHATPULSE_STATS_TTL_DAYS", "0"),
        ("CHATPULSE_STATS_TTL_DAYS", "7301"),
        ("CHATPULSE_MESSAGE_TTL_DAYS", "400"),
        ("CHATPULSE_CASSANDRA_CONSISTENCY", "MOST"),
        ("CHATPULSE_MODERATION_HORIZON", "soon"),
        # not co-partitioned with the messages topic (6 partitions by default)
        ("CHATPULSE_EVENTS_PARTITIONS", "3"),
    ],
)
def test_bad_setting_names_itself(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable) as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_the_events_topic_follows_the_messages_topics_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATPULSE_MESSAGES_PARTITIONS", "12")
    assert load_settings().events_partition_count == 12
    monkeypatch.setenv("CHATPULSE_EVENTS_PARTITIONS", "12")
    assert load_settings().events_partition_count == 12


def test_chat_message_wire_round_trip() -> None:
    message = ChatMessage(
        id="m1",
        channel="c",
        user_id="7",
        user_login="u",
        text="Kappa hi",
        sent_at=5,
        emotes=[Emote(id="25", start=0, end=4)],
    )
    decoded = decode_chat_message(encode(message))
    assert decoded == message
    assert decoded.emote_name(decoded.emotes[0]) == "Kappa"
    extra = b'{"id":"m","channel":"c","user_id":"1","user_login":"u","text":"","sent_at":1,"new":1}'
    assert decode_chat_message(extra).id == "m"
    with pytest.raises(msgspec.ValidationError):
        decode_chat_message(b'{"id":"m","channel":"c"}')


def test_kafka_security_properties(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "kafka-ca.pem"  # read at start: it must exist
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert load_settings().kafka_security_config() == {}
    monkeypatch.setenv("CHATPULSE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CHATPULSE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CHATPULSE_KAFKA_SASL_USERNAME", "chatpulse")
    monkeypatch.setenv("CHATPULSE_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("CHATPULSE_KAFKA_SSL_CA_LOCATION", str(ca))
    settings = load_settings()
    assert settings.kafka_client_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "chatpulse",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(ca),
    }
    assert "s3cret" not in repr(settings)


def test_sasl_without_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPULSE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="CHATPULSE_KAFKA_SASL_USERNAME") as caught:
        load_settings()
    assert "\n" not in str(caught.value)
    monkeypatch.delenv("CHATPULSE_KAFKA_SECURITY_PROTOCOL")
    monkeypatch.setenv("CHATPULSE_CASSANDRA_USERNAME", "only-a-name")
    with pytest.raises(ConfigError, match="CHATPULSE_CASSANDRA_PASSWORD"):
        load_settings()


def test_cassandra_auth_and_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = load_settings()
    assert _auth_provider(plain) is None
    assert ssl_context(plain) is None
    monkeypatch.setenv("CHATPULSE_CASSANDRA_USERNAME", "reader")
    monkeypatch.setenv("CHATPULSE_CASSANDRA_PASSWORD", "pw")
    monkeypatch.setenv("CHATPULSE_CASSANDRA_SSL", "true")
    secured = load_settings()
    provider = _auth_provider(secured)
    assert isinstance(provider, PlainTextAuthProvider)
    assert (provider.username, provider.password) == ("reader", "pw")
    context = ssl_context(secured)
    assert context is not None
    assert context.check_hostname


def test_settings_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPULSE_CHANNELS", "a,b")
    monkeypatch.setenv("CHATPULSE_API_KEY", "k3y")
    monkeypatch.setenv("CHATPULSE_CASSANDRA_SSL", "true")
    monkeypatch.setenv("CHATPULSE_GRACE", "30s")
    settings = load_settings()
    env = settings.as_environment()
    assert env["CHATPULSE_CHANNELS"] == "a,b"
    assert env["CHATPULSE_API_KEY"] == "k3y"
    assert "CHATPULSE_TWITCH_TOKEN" not in env  # unset stays unset
    for name in list(os.environ):
        if name.startswith("CHATPULSE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings() == settings
