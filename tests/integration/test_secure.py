"""Every service on the secured stack (``chatpulse stack up --secure``), each as its own
principal: the numbers still come out exact, and what a principal may not do is refused.

Each service's settings are what ``chatpulse stack env --service <name>`` prints.
"""

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import KnownStream, running_api
from cassandra import Unauthorized
from cassandra.cluster import NoHostAvailable
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from processor_support import ProcessorProcess

from chatpulse.errors import AccessRefusedError
from chatpulse.models import encode
from chatpulse.provision import initialize
from chatpulse.settings import Settings
from chatpulse.stack import Stack
from chatpulse.stack.cli import stack_environment
from chatpulse.stack.secrets import StackSecrets
from chatpulse.storage import connect
from chatpulse.topics import Topics
from conftest import principal_settings

pytestmark = [pytest.mark.secure, pytest.mark.timeout(600)]

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
COUNTS = {"securealpha": 31, "securebeta": 17}


def _settings(stack: Stack, service: str, **overrides: Any) -> Settings:
    return principal_settings(stack_environment(stack, service), **overrides)


def _producer(settings: Settings) -> Producer:
    return Producer({**settings.kafka_client_config(), "log_level": 0})


def test_the_pipeline_counts_exactly_with_each_service_as_its_principal(
    secure_stack: Stack, tmp_path: Path
) -> None:
    ingest = _settings(secure_stack, "ingest")
    windows = {"1m": 60_000}
    stream = KnownStream.build(windows, COUNTS)
    producer = _producer(ingest)
    topic = Topics.from_settings(ingest).messages
    failures: list[KafkaError] = []
    for message in stream.messages:
        producer.produce(
            topic,
            key=message.channel.encode(),
            value=encode(message),
            timestamp=message.sent_at,
            on_delivery=lambda error, _msg: failures.append(error) if error else None,
        )
    assert producer.flush(30) == 0
    assert failures == []

    processor = ProcessorProcess(
        _settings(secure_stack, "process"),
        tmp_path / "state",
        tmp_path / "processor.log",
        CHATPULSE_WINDOWS="1m",
    )
    processor.start()
    try:
        with running_api(_settings(secure_stack, "api"), ca=secure_stack.secrets.ca_cert) as api:
            assert str(api.base_url).startswith("https://")
            expected = {
                channel: stream.window_table()[(channel, "1m", stream.starts(channel, "1m")[0])]
                for channel in COUNTS
            }
            deadline = time.monotonic() + 180
            pending = set(COUNTS)
            while pending:
                assert processor.alive(), processor.log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"not counted: {sorted(pending)}"
                for channel in sorted(pending):
                    response = api.get(f"/api/v1/channels/{channel}")
                    if response.status_code != 200:
                        continue
                    body = response.json()
                    window = body["windows"]["1m"]
                    if body["total_messages"] == COUNTS[channel] and window is not None:
                        assert window["messages"] == expected[channel].messages
                        assert window["unique_chatters"] == len(expected[channel].users)
                        pending.discard(channel)
                time.sleep(0.5)
    finally:
        assert processor.stop() == 0
    log = processor.log.read_text()
    assert "AUTHORIZATION_FAILED" not in log
    assert "Unauthorized" not in log


def _init(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHATPULSE_")}
    return subprocess.run(
        [str(VENV_BIN / "chatpulse"), "init", "--timeout", "60"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_wrong_kafka_password_stops_init_at_once_with_one_line(secure_stack: Stack) -> None:
    env = stack_environment(secure_stack, "admin")
    env["CHATPULSE_KAFKA_SASL_PASSWORD"] = "not-the-password"
    began = time.monotonic()
    done = _init(env)
    assert done.returncode == 1
    assert time.monotonic() - began < 45  # not the 60 s wait for a Kafka that is away
    assert done.stderr.count("\n") == 1
    line = done.stderr.strip()
    assert line.startswith(
        f"chatpulse: error: Kafka at {secure_stack.kafka_bootstrap_servers} refused the "
        "connection (CHATPULSE_KAFKA_SASL_USERNAME / CHATPULSE_KAFKA_SASL_PASSWORD"
    )
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in line
    assert "not-the-password" not in line


def test_an_untrusted_ca_stops_init_at_once_with_one_line(
    secure_stack: Stack, tmp_path: Path
) -> None:
    stranger = StackSecrets(tmp_path / "other")
    stranger.ensure([])
    env = stack_environment(secure_stack, "admin")
    env["CHATPULSE_KAFKA_SSL_CA_LOCATION"] = str(stranger.ca_cert)
    done = _init(env)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    line = done.stderr.strip()
    assert line.startswith(
        f"chatpulse: error: Kafka at {secure_stack.kafka_bootstrap_servers} refused the "
        "connection (CHATPULSE_KAFKA_SSL_CA_LOCATION"
    )
    assert "certificate verify failed" in line


def test_cassandra_refusals_stop_with_one_line(secure_stack: Stack, tmp_path: Path) -> None:
    wrong = _settings(secure_stack, "admin", cassandra_password="not-the-password")
    with pytest.raises(AccessRefusedError) as refused:
        initialize(wrong, timeout=60)
    text = str(refused.value)
    assert "\n" not in text
    assert "refused the login (CHATPULSE_CASSANDRA_USERNAME" in text
    assert "Provided username chatpulse_admin and/or password are incorrect" in text
    assert "not-the-password" not in text

    stranger = StackSecrets(tmp_path / "other")
    stranger.ensure([])
    untrusted = _settings(secure_stack, "admin", cassandra_ssl_ca_file=stranger.ca_cert)
    with pytest.raises(AccessRefusedError) as refused:
        initialize(untrusted, timeout=60)
    text = str(refused.value)
    assert "\n" not in text
    assert "(CHATPULSE_CASSANDRA_SSL_CA_FILE)" in text
    assert "certificate verify failed" in text


def test_plaintext_clients_are_refused(secure_stack: Stack) -> None:
    admin = AdminClient({"bootstrap.servers": secure_stack.kafka_bootstrap_servers, "log_level": 0})
    with pytest.raises(KafkaException) as no_metadata:
        admin.list_topics(timeout=5)
    assert no_metadata.value.args[0].code() == KafkaError._TRANSPORT
    # The right password without TLS does not get in either.
    admin_env = stack_environment(secure_stack, "admin")
    plain = _settings(secure_stack, "admin", cassandra_ssl=False, cassandra_ssl_ca_file=None)
    assert plain.cassandra_password is not None
    assert admin_env["CHATPULSE_CASSANDRA_PASSWORD"] == plain.cassandra_password.get_secret_value()
    with pytest.raises(NoHostAvailable):
        connect(plain, connect_timeout=5)


def test_the_api_principal_cannot_produce_chat(secure_stack: Stack) -> None:
    api = _settings(secure_stack, "api")
    producer = _producer(api)
    errors: list[KafkaError] = []
    producer.produce(
        Topics.from_settings(api).messages,
        key=b"securealpha",
        value=b"{}",
        on_delivery=lambda error, _msg: errors.append(error),
    )
    producer.flush(30)
    assert [error.code() for error in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    # The broker logs the refusal: what docs/learning-kafka.md shows how to watch.
    log = (secure_stack.data_dir / "logs" / "kafka.log").read_text()
    # The producer asks for the topic's metadata first: denied (no DESCRIBE), it sends nothing.
    assert (
        "Principal = User:api is Denied operation = DESCRIBE from host = 127.0.0.1 on resource "
        "= Topic:LITERAL:twitch-chat-messages for request = Metadata"
    ) in log


def test_the_api_role_reads_and_cannot_insert(secure_stack: Stack) -> None:
    api = _settings(secure_stack, "api")
    cluster, session = connect(api)
    try:
        rows = session.execute("SELECT channel FROM chatpulse.channel_totals LIMIT 1")
        assert rows is not None
        with pytest.raises(Unauthorized) as refused:
            session.execute(
                "INSERT INTO chatpulse.channel_totals (channel, total_messages) VALUES ('x', 1)"
            )
        assert "User chatpulse_api has no MODIFY permission" in str(refused.value)
    finally:
        cluster.shutdown()


def test_the_dashboard_is_served_over_https_with_the_stacks_certificate(
    secure_stack: Stack,
) -> None:
    ca = secure_stack.secrets.ca_cert
    with running_api(_settings(secure_stack, "api"), ca=ca) as api:
        assert str(api.base_url).startswith("https://127.0.0.1:")
        assert api.get("/readyz").json()["status"] == "ready"
        page = api.get("/")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert page.headers["strict-transport-security"].startswith("max-age=")
        # A client that does not trust the stack's CA is refused the handshake.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{api.base_url}/readyz", timeout=5)
