"""The dev services' certificates: one self-signed CA, and server certificates it signs.

Layout under the repo root (made on first use, kept across restarts):
    .dev/ca/ca.pem, ca.key          the CA (what clients trust: CEREBELUM_KAFKA_SSL_CA_FILE,
                                    sslrootcert= of the database URL)
    <service dir>/<name>.pem, .key  a server certificate for 127.0.0.1 and localhost

A certificate is made again when it is missing, expires within a week, or was signed by another
CA (a deleted .dev/ca). Keys are unencrypted PKCS#8 with mode 0600: Kafka's PEM keystore and
PostgreSQL both read that form. Development only: a real deployment's certificates come from
its own CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Long enough that a dev checkout never meets an expiry; short enough to be obviously dev.
VALID_DAYS = 825
RENEW_BEFORE = datetime.timedelta(days=7)
HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True, slots=True)
class ServerCert:
    cert: Path
    key: Path


def ca_dir(root: Path) -> Path:
    return root / ".dev" / "ca"


def ca_file(root: Path) -> Path:
    return ca_dir(root) / "ca.pem"


def ensure_ca(root: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The dev CA, made if missing."""
    folder = ca_dir(root)
    cert_path, key_path = folder / "ca.pem", folder / "ca.key"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Cerebelum dev CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def ensure_server_cert(root: Path, folder: Path, name: str) -> ServerCert:
    """`folder/name.pem` and `.key`: a certificate for HOSTS signed by the dev CA."""
    ca_cert, ca_key = ensure_ca(root)
    paths = ServerCert(folder / f"{name}.pem", folder / f"{name}.key")
    if _current(paths, ca_cert):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(paths.key, key)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


def _current(paths: ServerCert, ca_cert: x509.Certificate) -> bool:
    if not (paths.cert.exists() and paths.key.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception):  # noqa: BLE001 - any doubt: make it again
        return False
    expires = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return expires > RENEW_BEFORE


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def ensure_password(path: Path) -> str:
    """A generated password kept in `path` (mode 0600), made once."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)  # URL-safe: fits a URL and a JAAS string unquoted
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    return password
