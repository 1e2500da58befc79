"""Certificate and key files named by settings: checked at start, loaded into TLS contexts.

A client certificate (Kafka, Cassandra) or the API's server certificate is a pair of PEM files,
the key possibly encrypted with a password. :func:`check_key_pair` reads both at start so that a
wrong path, a key of another certificate or a wrong password stops the program with one line
naming the setting, instead of failing at the first connection (or prompting on the terminal,
which OpenSSL does for an encrypted key given without a password).
"""

import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

__all__ = ["check_key_pair", "client_context", "readable_file"]


def readable_file(path: Path) -> Path:
    """``path`` if it is a file this process can read; ValueError saying why not."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise ValueError(f"not a file: {path}")
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except OSError as exc:  # a directory on the way or the file itself not readable
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return path


def _password_bytes(password: SecretStr | None) -> bytes | None:
    return password.get_secret_value().encode() if password is not None else None


def check_key_pair(
    cert: Path, key: Path, password: SecretStr | None, *, names: tuple[str, str, str]
) -> None:
    """Raise ValueError naming the setting at fault unless ``key`` opens and belongs to ``cert``.

    ``names``: the settings of the certificate, the key and the key's password, for messages.
    The password never appears in a message.
    """
    cert_name, key_name, password_name = names
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError:
        raise ValueError(f"{cert_name}: {cert} is not a PEM certificate") from None
    try:
        private_key = serialization.load_pem_private_key(
            key.read_bytes(), password=_password_bytes(password)
        )
    except TypeError:  # encrypted without a password given, or a password for a plain key
        if password is None:
            raise ValueError(f"{key_name}: {key} is encrypted; set {password_name}") from None
        raise ValueError(
            f"{password_name} is set but {key_name} ({key}) is not encrypted"
        ) from None
    except ValueError:
        if password is not None and b"ENCRYPTED" in key.read_bytes():
            raise ValueError(f"{password_name} does not decrypt {key_name} ({key})") from None
        raise ValueError(f"{key_name}: {key} is not a PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    if private_key.public_key().public_bytes(pem, public) != certificate.public_key().public_bytes(
        pem, public
    ):
        raise ValueError(f"{key_name} ({key}) is not the key of {cert_name} ({cert})")


def client_context(
    *,
    ca_file: Path | None,
    cert: Path | None,
    key: Path | None,
    password: SecretStr | None,
    verify_hostname: bool,
) -> ssl.SSLContext:
    """A client context: the given CA (else the system's), an optional client certificate.

    The server's certificate is always verified against the CA; ``verify_hostname=False`` only
    drops the check that it names the host connected to (for servers whose certificates do not
    carry the names or addresses clients use).
    """
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.check_hostname = verify_hostname
    if cert is not None and key is not None:
        secret = _password_bytes(password) or b""
        # A callable, never None: OpenSSL would prompt on the terminal for an encrypted key.
        context.load_cert_chain(str(cert), str(key), password=lambda: secret)
    return context
