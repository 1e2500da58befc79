"""The secured stack's pure parts: its secrets, server configs, ACLs, grants and `stack env`."""

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from chatpulse.stack import StackError
from chatpulse.stack.access import cassandra_grants, kafka_acls
from chatpulse.stack.cassandra import cassandra_yaml
from chatpulse.stack.cli import stack_environment
from chatpulse.stack.kafka import kafka_properties
from chatpulse.stack.secrets import StackSecrets
from chatpulse.stack.stack import Stack


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def test_secrets_hold_a_ca_and_a_server_certificate_naming_every_node(tmp_path: Path) -> None:
    secrets = StackSecrets(tmp_path / "secrets")
    secrets.ensure(["127.0.0.2", "127.0.0.3"])

    ca = x509.load_pem_x509_certificate(secrets.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(secrets.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sorted(map(str, names.get_values_for_type(x509.IPAddress))) == [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
    ]
    # The keystore both servers read opens with its password and holds the same certificate.
    key, cert, chain = pkcs12.load_key_and_certificates(
        secrets.keystore.read_bytes(), secrets.password("keystore").encode()
    )
    assert key is not None
    assert cert == server
    assert chain == [ca]
    for private in (secrets.ca_key, secrets.server_key, secrets.keystore, secrets.passwords_file):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets.directory.stat().st_mode) == 0o700
    passwords = json.loads(secrets.passwords_file.read_text())
    assert len(set(passwords.values())) == len(passwords) == 9


def test_secrets_are_made_once_and_a_new_address_gets_a_new_certificate(tmp_path: Path) -> None:
    secrets = StackSecrets(tmp_path / "secrets")
    secrets.ensure([])
    ca, passwords = secrets.ca_cert.read_bytes(), secrets.passwords_file.read_bytes()
    server = secrets.server_cert.read_bytes()
    secrets.ensure(["127.0.0.1"])
    assert secrets.server_cert.read_bytes() == server
    secrets.ensure(["127.0.0.4"])
    assert secrets.server_cert.read_bytes() != server
    assert (secrets.ca_cert.read_bytes(), secrets.passwords_file.read_bytes()) == (ca, passwords)


def test_a_secured_kafka_takes_clients_on_sasl_ssl_only_and_denies_without_acl(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path / "s", kafka_port=29092, cassandra_port=29042, secure=True)
    security = stack.kafka.security
    assert security is not None
    props = _properties(
        kafka_properties(port=29092, controller_port=29093, log_dir=tmp_path, security=security)
    )
    assert props["listeners"] == "SASL_SSL://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:29092"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin;User:CN=chatpulse-stack-server"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["ssl.keystore.location"] == str(stack.secrets.keystore)
    users = [arg for arg in security.scram_arguments() if arg != "--add-scram"]
    assert [user.split(",")[0] for user in users] == [
        "SCRAM-SHA-512=[name=admin",
        "SCRAM-SHA-512=[name=api",
        "SCRAM-SHA-512=[name=ingest",
        "SCRAM-SHA-512=[name=processor",
    ]


def test_a_secured_cassandra_checks_logins_and_grants_and_requires_tls(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "s", kafka_port=29092, cassandra_port=29042, secure=True)
    text = cassandra_yaml(
        port=29042, storage_port=29043, home=tmp_path, security=stack.cassandra.security
    )
    config = json.loads(text.split("\n", 1)[1])
    assert config["authenticator"] == "PasswordAuthenticator"
    assert config["authorizer"] == "CassandraAuthorizer"
    encryption = config["client_encryption_options"]
    assert (encryption["enabled"], encryption["optional"]) == (True, False)
    assert encryption["keystore"] == str(stack.secrets.keystore)
    assert "authenticator" not in json.loads(
        cassandra_yaml(port=1, storage_port=2, home=tmp_path).split("\n", 1)[1]
    )


def test_each_principal_gets_only_what_its_service_does() -> None:
    acls = kafka_acls("p-")
    allowed = {(a.principal, a.resource, a.name, op) for a in acls for op in a.operations}
    assert ("ingest", "TOPIC", "p-twitch-chat-messages", "WRITE") in allowed
    assert ("processor", "TOPIC", "p-twitch-chat-messages", "READ") in allowed
    assert ("processor", "GROUP", "chatpulse-processor", "READ") in allowed
    assert ("api", "TOPIC", "p-tracked-channels", "WRITE") in allowed
    # Nobody but the processor reads chat; the api writes no chat, the ingest no stats.
    assert {p for p, r, n, op in allowed if n == "p-twitch-chat-messages" and op == "READ"} == {
        "processor"
    }
    assert not {(p, op) for p, r, n, op in allowed if p == "api" and n.endswith("messages")}
    assert ("ingest", "TOPIC", "p-channel-stats", "WRITE") not in allowed
    # Creating topics: only the processor's own state topics, by prefix.
    creators = {(a.principal, a.name, a.prefixed) for a in acls if "CREATE" in a.operations}
    assert creators == {
        ("processor", "changelog__chatpulse-processor--", True),
        ("processor", "repartition__chatpulse-processor--", True),
    }
    assert "admin" not in {a.principal for a in acls}  # a super user needs none


def test_the_api_role_only_reads_the_keyspace() -> None:
    grants = cassandra_grants("ks")
    assert grants["chatpulse_api"] == ["SELECT ON KEYSPACE ks"]
    assert grants["chatpulse_processor"] == ["SELECT ON KEYSPACE ks", "MODIFY ON KEYSPACE ks"]
    assert "ALL PERMISSIONS ON KEYSPACE ks" in grants["chatpulse_admin"]


def test_stack_env_connects_each_service_as_its_own_principal(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "s", kafka_port=29092, cassandra_port=29042, secure=True)
    api = stack_environment(stack, "api")
    assert api["CHATPULSE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert api["CHATPULSE_KAFKA_SASL_USERNAME"] == "api"
    assert api["CHATPULSE_KAFKA_SASL_PASSWORD"] == stack.secrets.password("kafka:api")
    assert api["CHATPULSE_CASSANDRA_USERNAME"] == "chatpulse_api"
    assert api["CHATPULSE_CASSANDRA_SSL_CA_FILE"] == str(stack.secrets.ca_cert)
    assert api["CHATPULSE_API_TLS_CERT"] == str(stack.secrets.server_cert)  # HTTPS
    assert api["CHATPULSE_API_TLS_KEY"] == str(stack.secrets.server_key)
    assert stack_environment(stack, "process")["CHATPULSE_KAFKA_SASL_USERNAME"] == "processor"
    assert "CHATPULSE_API_TLS_CERT" not in stack_environment(stack, "process")
    assert stack_environment(stack, "admin")["CHATPULSE_CASSANDRA_USERNAME"] == "chatpulse_admin"
    ingest = stack_environment(stack, "ingest")
    assert "CHATPULSE_CASSANDRA_USERNAME" not in ingest  # the ingest uses no Cassandra
    # Remembered: the same data dir without the flag is still the secured stack.
    again = Stack(tmp_path / "s", kafka_port=29092, cassandra_port=29042)
    assert again.secure
    assert stack_environment(again, "api") == api


def test_a_plain_stack_stays_plain(tmp_path: Path) -> None:
    plain = Stack(tmp_path / "p", kafka_port=29092, cassandra_port=29042)
    assert not plain.secure
    assert "CHATPULSE_KAFKA_SECURITY_PROTOCOL" not in stack_environment(plain, "api")
    (tmp_path / "p" / "kafka").mkdir(parents=True)
    with pytest.raises(StackError, match="holds a plain stack"):
        Stack(tmp_path / "p", kafka_port=29092, cassandra_port=29042, secure=True)
