"""chatpulse's Cassandra connection against a node that requires TLS with client certificates.

A Cassandra of the test's own (as ``dedicated_cassandra``) whose client port takes only TLS,
with a server certificate from a test CA naming ``localhost`` but not the address clients use
(127.0.0.1), and asks each client for a certificate of the same CA. ``chatpulse.storage.connect``
must get in with the client certificate and CHATPULSE_CASSANDRA_SSL_VERIFY_HOSTNAME off, and be
refused without the certificate, with one of another CA, and with the name check on.
"""

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cassandra.cluster import NoHostAvailable

from chatpulse.ports import free_ports
from chatpulse.settings import Settings, load_settings
from chatpulse.stack import CassandraServer
from chatpulse.storage import connect, ssl_context
from pki_support import Pki

pytestmark = pytest.mark.timeout(420)

KEY_PASSWORD = "node-key-7731"


class TlsCassandra(CassandraServer):
    """A Cassandra node whose client port requires TLS and a client certificate (PEM files)."""

    def __init__(self, data_dir: Path, port: int, *, keystore: Path, truststore: Path) -> None:
        # Throwaway, never killed: skip making schema changes durable (a faster start).
        super().__init__(data_dir, port, crash_safe=False)
        self.keystore, self.truststore = keystore, truststore

    def write_config(self) -> None:
        super().write_config()
        header, _, body = self.config_file.read_text().partition("\n")
        config = json.loads(body)
        config["client_encryption_options"] = {
            "enabled": True,
            "optional": False,
            "require_client_auth": True,
            "ssl_context_factory": {
                "class_name": "org.apache.cassandra.security.PEMBasedSslContextFactory"
            },
            "keystore": str(self.keystore),
            "truststore": str(self.truststore),
        }
        self.config_file.write_text(f"{header}\n{json.dumps(config, indent=2)}")

    def answers(self) -> bool:
        """Ready once its TLS port completes a handshake with a client certificate."""
        return _try(self.settings) is None

    settings: Settings


def _try(settings: Settings) -> str | None:
    """None when a session opens and answers a query; else the reason it did not."""
    try:
        cluster, session = connect(settings, connect_timeout=5)
    except NoHostAvailable as exc:
        return " ".join(str(error) for error in exc.errors.values())
    try:
        session.execute("SELECT release_version FROM system.local", timeout=5)
    finally:
        cluster.shutdown()
    return None


@pytest.fixture
def tls_node(tmp_path: Path, pki: Pki) -> Iterator[tuple[TlsCassandra, dict[str, Any]]]:
    """The node, and the settings of a client holding a certificate of the node's CA."""
    # Unencrypted: Java reads no PBES2-encrypted PKCS#8 key (the file stays owner-only).
    node = pki.issue("node", hosts=("localhost",))
    keystore = tmp_path / "node-keystore.pem"  # Cassandra's PEM key store: key, then chain
    keystore.write_bytes(node.key.read_bytes() + node.cert.read_bytes())
    client = pki.issue("processor", client=True, password=KEY_PASSWORD)
    (port,) = free_ports(1)
    server = TlsCassandra(tmp_path / "node", port, keystore=keystore, truststore=pki.ca_cert)
    base: dict[str, Any] = {
        "cassandra_contact_points": "127.0.0.1",
        "cassandra_port": port,
        "cassandra_ssl_ca_file": pki.ca_cert,
        "cassandra_ssl_verify_hostname": False,
        "cassandra_consistency": "ONE",
    }
    client_files = {
        "cassandra_ssl_cert_file": client.cert,
        "cassandra_ssl_key_file": client.key,
        "cassandra_ssl_key_password": KEY_PASSWORD,
    }
    server.settings = load_settings(**base, **client_files)
    server.start()
    try:
        server.wait_ready(timeout=300)  # 30-60 s, minutes on a loaded machine
        yield server, {**base, **client_files}
    finally:
        server.stop(timeout=30)


def test_client_certificate_and_hostname_switch_against_a_tls_only_node(
    tls_node: tuple[TlsCassandra, dict[str, Any]], tmp_path: Path
) -> None:
    _server, given = tls_node
    with_cert = load_settings(**given)
    without_cert = load_settings(
        **{
            k: v
            for k, v in given.items()
            if not k.startswith(("cassandra_ssl_cert", "cassandra_ssl_key"))
        }
    )
    stranger = Pki(tmp_path / "other-ca", name="another CA").issue("intruder", client=True)
    foreign_cert = load_settings(
        **{
            **given,
            "cassandra_ssl_cert_file": stranger.cert,
            "cassandra_ssl_key_file": stranger.key,
            "cassandra_ssl_key_password": None,
        }
    )
    names_checked = load_settings(**{**given, "cassandra_ssl_verify_hostname": True})
    plaintext = load_settings(
        cassandra_contact_points="127.0.0.1", cassandra_port=given["cassandra_port"]
    )

    assert _try(with_cert) is None
    # The node asks for a certificate and gets none, or one it does not trust.
    assert _try(without_cert) is not None
    assert _try(foreign_cert) is not None
    # On, the node's certificate must name 127.0.0.1: it names only localhost.
    checked = _try(names_checked)
    assert checked is not None
    assert "IP address mismatch" in checked
    assert _try(plaintext) is not None
    context = ssl_context(with_cert)
    assert context is not None
    assert (context.check_hostname, context.verify_mode) == (False, ssl.CERT_REQUIRED)
