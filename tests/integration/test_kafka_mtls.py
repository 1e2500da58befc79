"""chatpulse's Kafka clients against a broker whose client listener requires TLS with client
certificates (a Kafka of the test's own, as ``dedicated_kafka``, with PEM key stores).

``init``'s topic creation, a producer and a consumer built from the settings, and the
processor's Quix connection config get in with CHATPULSE_KAFKA_SSL_CERT_LOCATION /
KEY_LOCATION / KEY_PASSWORD (an encrypted key); without a certificate the broker refuses.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from quixstreams.kafka.configuration import ConnectionConfig

from chatpulse.kafka_admin import admin_client
from chatpulse.ports import free_ports
from chatpulse.provision import ensure_topics
from chatpulse.settings import Settings, load_settings
from chatpulse.stack import KafkaServer
from chatpulse.topics import Topics
from pki_support import Pki

pytestmark = pytest.mark.timeout(420)

KEY_PASSWORD = "client-key-5521"


class MtlsKafka(KafkaServer):
    """A broker whose client listener is SSL with ``ssl.client.auth=required``; the brokers
    talk among themselves on a plaintext listener of their own."""

    settings: Settings

    def __init__(
        self, data_dir: Path, port: int, inter_port: int, *, keystore: Path, truststore: Path
    ) -> None:
        super().__init__(data_dir, port)
        self.inter_port = inter_port
        self.keystore, self.truststore = keystore, truststore

    def write_config(self) -> None:
        super().write_config()
        lines = self.config_file.read_text().splitlines()
        replaced = {
            "listeners": f"SSL://127.0.0.1:{self.port},"
            f"INTERNAL://127.0.0.1:{self.inter_port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"SSL://127.0.0.1:{self.port},"
            f"INTERNAL://127.0.0.1:{self.inter_port}",
            "listener.security.protocol.map": "SSL:SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "INTERNAL",
        }
        kept = [line for line in lines if line.split("=", 1)[0] not in replaced]
        kept += [f"{key}={value}" for key, value in replaced.items()]
        kept += [
            "ssl.client.auth=required",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.truststore}",
        ]
        self.config_file.write_text("\n".join(kept) + "\n")

    def answers(self) -> bool:
        admin = admin_client(
            self.settings.kafka_bootstrap_servers, self.settings.kafka_security_config()
        )
        try:
            admin.list_topics(timeout=5)
        except KafkaException:
            return False
        return True


@pytest.fixture
def mtls_kafka(tmp_path: Path, pki: Pki) -> Iterator[dict[str, Any]]:
    """The broker, started; yields the settings of a client with a certificate of its CA."""
    # Unencrypted: the broker's Java reads no PBES2-encrypted PKCS#8 key.
    broker = pki.issue("broker", hosts=("localhost", "127.0.0.1"))
    keystore = tmp_path / "broker-keystore.pem"  # Kafka's PEM key store: key, then chain
    keystore.write_bytes(broker.key.read_bytes() + broker.cert.read_bytes())
    client = pki.issue("ingest", client=True, password=KEY_PASSWORD)
    port, inter_port = free_ports(2)
    server = MtlsKafka(
        tmp_path / "kafka", port, inter_port, keystore=keystore, truststore=pki.ca_cert
    )
    given: dict[str, Any] = {
        "kafka_bootstrap_servers": f"127.0.0.1:{port}",
        "kafka_security_protocol": "SSL",
        "kafka_ssl_ca_location": pki.ca_cert,
        "kafka_ssl_cert_location": client.cert,
        "kafka_ssl_key_location": client.key,
        "kafka_ssl_key_password": KEY_PASSWORD,
        "topic_prefix": f"t{uuid.uuid4().hex[:8]}-",
    }
    server.settings = load_settings(**given)
    server.start()
    try:
        server.wait_ready(timeout=300)
        yield given
    finally:
        server.stop(timeout=30)


def test_clients_get_in_with_the_client_certificate_and_not_without(
    mtls_kafka: dict[str, Any],
) -> None:
    settings = load_settings(**mtls_kafka)
    no_cert = load_settings(
        **{
            k: v
            for k, v in mtls_kafka.items()
            if not k.startswith(("kafka_ssl_cert", "kafka_ssl_key"))
        }
    )
    topics = Topics.from_settings(settings)

    created = ensure_topics(settings, wait_s=30)
    producer = Producer(settings.kafka_client_config())
    producer.produce(topics.tracked, key=b"alpha", value=b'{"channel":"alpha"}')
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"mtls-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topics.tracked])
        record = None
        for _ in range(60):
            record = consumer.poll(1.0)
            if record is not None and record.error() is None:
                break
    finally:
        consumer.close()
    # The processor's Quix clients are built from this connection config.
    quix = ConnectionConfig.from_librdkafka_dict(settings.kafka_client_config())
    quix_security = {
        k: str(v) for k, v in quix.as_librdkafka_dict().items() if k != "bootstrap.servers"
    }
    listed = set(
        admin_client(settings.kafka_bootstrap_servers, quix_security).list_topics(timeout=30).topics
    )
    refused = admin_client(no_cert.kafka_bootstrap_servers, no_cert.kafka_security_config())

    names = sorted(spec.name for spec in topics.specs(settings))
    assert sorted(created) == names
    assert set(names) <= listed
    assert record is not None
    assert (record.key(), record.value()) == (b"alpha", b'{"channel":"alpha"}')
    assert quix_security["ssl.certificate.location"] == str(mtls_kafka["kafka_ssl_cert_location"])
    assert quix_security["ssl.key.password"] == KEY_PASSWORD
    with pytest.raises(KafkaException) as refusal:
        refused.list_topics(timeout=10)
    # The broker ends every handshake without a certificate: no answer ever comes.
    assert refusal.value.args[0].code() == KafkaError._TRANSPORT, refusal.value
