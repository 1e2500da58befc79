"""The secrets of a secured stack, made at its first start in ``<data dir>/secrets/``.

- ``ca.pem`` / ``ca-key.pem``: the stack's own certificate authority (clients trust ``ca.pem``);
- ``server.pem`` / ``server-key.pem`` and ``server.p12`` (the same key and chain as a PKCS#12
  keystore, which both Java servers read): one certificate for every node, naming ``localhost``
  and the loopback address of each node, so clients that check hostnames accept it. Kafka
  nodes also present it to each other on the controller listener (mutual TLS);
- ``passwords.json``: the random passwords of the Kafka users, the Cassandra roles and the
  keystore.

The directory is readable by its owner only. Nothing here is ever logged.
"""

import datetime
import ipaddress
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chatpulse.stack.errors import StackError

__all__ = [
    "CASSANDRA_ROLES",
    "CASSANDRA_SUPERUSER",
    "KAFKA_USERS",
    "SERVER_DN",
    "StackSecrets",
]

# The Kafka users (SCRAM-SHA-512): admin is the super user, the others get ACLs (stack.access).
KAFKA_USERS = ("admin", "ingest", "processor", "api")
# The Cassandra role of each service (ingest does not use Cassandra).
CASSANDRA_ROLES = {
    "admin": "chatpulse_admin",
    "process": "chatpulse_processor",
    "api": "chatpulse_api",
}
# Replaces Cassandra's default superuser ``cassandra`` (whose password everyone knows).
CASSANDRA_SUPERUSER = "chatpulse_superuser"
# The subject of the servers' certificate; Kafka maps it to the principal ``User:CN=...``
# of a node calling another node's controller listener.
SERVER_DN = "CN=chatpulse-stack-server"

_CA_YEARS = 10
_SERVER_DAYS = 825  # the longest validity clients such as browsers accept


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read (created so, never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@dataclass(frozen=True, slots=True)
class StackSecrets:
    """The files under ``directory`` (``<data dir>/secrets``)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server-key.pem"

    @property
    def keystore(self) -> Path:
        return self.directory / "server.p12"

    @property
    def passwords_file(self) -> Path:
        return self.directory / "passwords.json"

    def exists(self) -> bool:
        """True once the secrets were made (the stack is then a secured one)."""
        return self.passwords_file.exists()

    def ensure(self, addresses: Iterable[str]) -> None:
        """Make what is missing: passwords, the CA, and a server certificate that names every
        address in ``addresses`` (remade, by the same CA, when one is not named yet)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if not self.passwords_file.exists():
            names = [
                *(f"kafka:{user}" for user in KAFKA_USERS),
                *(f"cassandra:{role}" for role in (*CASSANDRA_ROLES.values(), CASSANDRA_SUPERUSER)),
                "keystore",
            ]
            # url-safe characters only: the passwords go into Kafka's JAAS and SCRAM syntaxes.
            passwords = {name: secrets.token_urlsafe(24) for name in names}
            _write_private(self.passwords_file, json.dumps(passwords, indent=2).encode())
        if not self.ca_cert.exists() or not self.ca_key.exists():
            self._make_ca()
        wanted = sorted({"127.0.0.1", *addresses})
        if not self.keystore.exists() or not self._names_all(wanted):
            self._make_server_cert(wanted)

    def password(self, name: str) -> str:
        """The password of ``kafka:<user>``, ``cassandra:<role>`` or ``keystore``."""
        try:
            passwords = json.loads(self.passwords_file.read_text(encoding="utf-8"))
            return str(passwords[name])
        except (OSError, ValueError, KeyError) as exc:
            raise StackError(
                f"cannot read the password of {name} from {self.passwords_file}: {exc!r}"
            ) from None

    # --- certificates ---------------------------------------------------------------------------

    def _make_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chatpulse stack CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365 * _CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.ca_key, _pem_key(key))
        self.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.keystore.unlink(missing_ok=True)  # signed by a CA that no longer exists

    def _names_all(self, addresses: list[str]) -> bool:
        try:
            cert = x509.load_pem_x509_certificate(self.server_cert.read_bytes())
        except (OSError, ValueError):
            return False
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
        return set(addresses) <= have

    def _make_server_cert(self, addresses: list[str]) -> None:
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise StackError(f"{self.ca_key} does not hold the stack's EC key")
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
        alt_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name.from_rfc4514_string(SERVER_DN))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_SERVER_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            # clientAuth too: a Kafka node shows it when it calls another node's controller.
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(self.server_key, _pem_key(key))
        self.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        password = self.password("keystore").encode()
        # PBES1 with 3DES and a SHA-1 MAC: the PKCS#12 flavour every Java 17 reads.
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(50_000)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - the MAC Java's PKCS12 reader expects
            .build(password)
        )
        keystore = pkcs12.serialize_key_and_certificates(
            b"server", key, cert, [ca_cert], encryption
        )
        _write_private(self.keystore, keystore)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
