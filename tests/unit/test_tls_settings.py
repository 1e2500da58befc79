"""Certificate settings: Kafka mTLS, the Cassandra client certificate and hostname switch, the
API's HTTPS pair. Checked at start (one line naming the setting), secrets never shown."""

import os
import ssl
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatpulse.cli import app
from chatpulse.errors import ConfigError
from chatpulse.settings import load_settings
from chatpulse.storage import ssl_context
from pki_support import Pki

PASSWORD = "k3y-pa55-Zq9"


def test_kafka_client_certificate_reaches_every_client_config(pki: Pki) -> None:
    client = pki.issue("ingest", client=True, password=PASSWORD)

    settings = load_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_location=pki.ca_cert,
        kafka_ssl_cert_location=client.cert,
        kafka_ssl_key_location=client.key,
        kafka_ssl_key_password=PASSWORD,
    )

    assert settings.kafka_client_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SSL",
        "ssl.ca.location": str(pki.ca_cert),
        "ssl.certificate.location": str(client.cert),
        "ssl.key.location": str(client.key),
        "ssl.key.password": PASSWORD,
    }


def test_secrets_stay_out_of_reprs_and_dumps(pki: Pki) -> None:
    client = pki.issue("api", client=True, password=PASSWORD)
    server = pki.issue("web", password=PASSWORD)
    settings = load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="api",
        kafka_sasl_password=PASSWORD,
        kafka_ssl_cert_location=client.cert,
        kafka_ssl_key_location=client.key,
        kafka_ssl_key_password=PASSWORD,
        cassandra_username="chatpulse_api",
        cassandra_password=PASSWORD,
        cassandra_ssl_cert_file=client.cert,
        cassandra_ssl_key_file=client.key,
        cassandra_ssl_key_password=PASSWORD,
        api_tls_cert=server.cert,
        api_tls_key=server.key,
        api_tls_key_password=PASSWORD,
        api_key=PASSWORD,
    )

    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert PASSWORD not in text
        assert "**********" in text
    # Children of ``chatpulse up`` get them through their environment, and only there.
    assert settings.as_environment()["CHATPULSE_KAFKA_SSL_KEY_PASSWORD"] == PASSWORD


def test_help_never_shows_a_secret(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    server = pki.issue("web", password=PASSWORD)
    for name in ("API_KEY", "API_TLS_KEY_PASSWORD", "CASSANDRA_PASSWORD", "KAFKA_SASL_PASSWORD"):
        monkeypatch.setenv(f"CHATPULSE_{name}", PASSWORD)
    monkeypatch.setenv("CHATPULSE_API_TLS_CERT", str(server.cert))
    monkeypatch.setenv("CHATPULSE_API_TLS_KEY", str(server.key))

    for command in (["api"], ["init"], []):
        result = CliRunner().invoke(app, [*command, "--help"], terminal_width=100)
        assert result.exit_code == 0, result.output
        assert PASSWORD not in result.output


@pytest.mark.parametrize(
    ("prefix", "cert", "key", "extra"),
    [
        (
            "kafka",
            "kafka_ssl_cert_location",
            "kafka_ssl_key_location",
            {"kafka_security_protocol": "SSL"},
        ),
        ("cassandra", "cassandra_ssl_cert_file", "cassandra_ssl_key_file", {}),
        ("api", "api_tls_cert", "api_tls_key", {}),
    ],
)
def test_a_certificate_needs_its_key_and_the_other_way_round(
    pki: Pki, prefix: str, cert: str, key: str, extra: dict[str, str]
) -> None:
    issued = pki.issue(prefix, client=prefix != "api")
    both = f"set both CHATPULSE_{cert.upper()} and CHATPULSE_{key.upper()}, or neither"

    with pytest.raises(ConfigError) as only_cert:
        load_settings(**{cert: issued.cert}, **extra)
    with pytest.raises(ConfigError) as only_key:
        load_settings(**{key: issued.key}, **extra)

    assert str(only_cert.value) == f"invalid settings: {both}"
    assert str(only_key.value) == f"invalid settings: {both}"


@pytest.mark.parametrize(
    "setting",
    [
        "kafka_ssl_ca_location",
        "kafka_ssl_cert_location",
        "kafka_ssl_key_location",
        "cassandra_ssl_ca_file",
        "cassandra_ssl_cert_file",
        "cassandra_ssl_key_file",
        "api_tls_cert",
        "api_tls_key",
    ],
)
def test_a_missing_file_names_its_setting(tmp_path: Path, setting: str) -> None:
    missing = tmp_path / "nowhere.pem"

    with pytest.raises(ConfigError) as error:
        load_settings(**{setting: missing})
    with pytest.raises(ConfigError) as directory:
        load_settings(**{setting: tmp_path})

    assert (
        str(error.value) == f"invalid setting CHATPULSE_{setting.upper()}: no such file: {missing}"
    )
    assert str(directory.value) == (
        f"invalid setting CHATPULSE_{setting.upper()}: not a file: {tmp_path}"
    )


def test_an_unreadable_file_names_its_setting(pki: Pki) -> None:
    """As a user who may not read the key (root reads any file: a child process as nobody)."""
    issued = pki.issue("web")
    issued.key.chmod(0o000)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        message = "loaded"
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            load_settings(api_tls_cert=issued.cert, api_tls_key=issued.key)
        except ConfigError as exc:
            message = str(exc)
        finally:
            os.write(write, message.encode())
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        message = pipe.read()

    # As nobody, the root-only test directory already hides the certificate.
    setting, path = ("CERT", issued.cert) if os.geteuid() == 0 else ("KEY", issued.key)
    assert (
        message
        == f"invalid setting CHATPULSE_API_TLS_{setting}: cannot read {path}: Permission denied"
    )


def test_a_key_of_another_certificate_is_refused(pki: Pki) -> None:
    one, other = pki.issue("one"), pki.issue("other")

    with pytest.raises(ConfigError) as error:
        load_settings(api_tls_cert=one.cert, api_tls_key=other.key)

    assert str(error.value) == (
        f"invalid settings: CHATPULSE_API_TLS_KEY ({other.key}) is not the key of "
        f"CHATPULSE_API_TLS_CERT ({one.cert})"
    )


def test_an_encrypted_key_needs_its_password_and_a_wrong_one_is_not_shown(pki: Pki) -> None:
    issued = pki.issue("db", client=True, password=PASSWORD)
    files = {"cassandra_ssl_cert_file": issued.cert, "cassandra_ssl_key_file": issued.key}

    with pytest.raises(ConfigError) as no_password:
        load_settings(**files)
    with pytest.raises(ConfigError) as wrong:
        load_settings(**files, cassandra_ssl_key_password="not-" + PASSWORD)
    settings = load_settings(**files, cassandra_ssl_key_password=PASSWORD)

    assert str(no_password.value) == (
        f"invalid settings: CHATPULSE_CASSANDRA_SSL_KEY_FILE: {issued.key} is encrypted; "
        "set CHATPULSE_CASSANDRA_SSL_KEY_PASSWORD"
    )
    assert str(wrong.value) == (
        "invalid settings: CHATPULSE_CASSANDRA_SSL_KEY_PASSWORD does not decrypt "
        f"CHATPULSE_CASSANDRA_SSL_KEY_FILE ({issued.key})"
    )
    assert settings.cassandra_ssl_key_file == issued.key


def test_a_key_password_without_a_key_and_a_certificate_without_tls(pki: Pki) -> None:
    issued = pki.issue("ingest", client=True)

    with pytest.raises(ConfigError) as password_alone:
        load_settings(kafka_ssl_key_password=PASSWORD)
    with pytest.raises(ConfigError) as plaintext:
        load_settings(kafka_ssl_cert_location=issued.cert, kafka_ssl_key_location=issued.key)

    assert str(password_alone.value) == (
        "invalid settings: CHATPULSE_KAFKA_SSL_KEY_PASSWORD is set without "
        "CHATPULSE_KAFKA_SSL_KEY_LOCATION"
    )
    assert str(plaintext.value) == (
        "invalid settings: CHATPULSE_KAFKA_SSL_CERT_LOCATION needs "
        "CHATPULSE_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL"
    )


def test_not_a_pem_file_is_named(pki: Pki) -> None:
    issued = pki.issue("web")

    with pytest.raises(ConfigError) as swapped:
        load_settings(api_tls_cert=issued.key, api_tls_key=issued.key)
    with pytest.raises(ConfigError) as not_a_key:
        load_settings(api_tls_cert=issued.cert, api_tls_key=issued.cert)

    assert str(swapped.value) == (
        f"invalid settings: CHATPULSE_API_TLS_CERT: {issued.key} is not a PEM certificate"
    )
    assert str(not_a_key.value) == (
        f"invalid settings: CHATPULSE_API_TLS_KEY: {issued.cert} is not a PEM private key"
    )


def test_cassandra_tls_context_follows_the_settings(pki: Pki) -> None:
    issued = pki.issue("processor", client=True, password=PASSWORD)

    assert ssl_context(load_settings()) is None
    checked = ssl_context(load_settings(cassandra_ssl_ca_file=pki.ca_cert))
    unchecked = ssl_context(
        load_settings(
            cassandra_ssl_ca_file=pki.ca_cert,
            cassandra_ssl_verify_hostname=False,
            cassandra_ssl_cert_file=issued.cert,
            cassandra_ssl_key_file=issued.key,
            cassandra_ssl_key_password=PASSWORD,
        )
    )

    assert checked is not None
    assert unchecked is not None
    assert (checked.check_hostname, checked.verify_mode) == (True, ssl.CERT_REQUIRED)
    # Off drops the name check only: the node's certificate must still come from the CA.
    assert (unchecked.check_hostname, unchecked.verify_mode) == (False, ssl.CERT_REQUIRED)
    assert [c["subject"] for c in unchecked.get_ca_certs()] == [
        ((("commonName", "chatpulse test CA"),),)
    ]
