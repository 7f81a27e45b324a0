"""How every Kafka client of Cerebelum connects: address, TLS and SASL, in one place.

`KafkaSecurity` is read from the environment at the edge (cerebelum.config) and checked there,
so a bad combination fails at start with a ConfigurationError. The two client libraries get it
from here only (a unit test holds every client construction to these functions):

    librdkafka_config(settings)  -> the worker's and the client listener's librdkafka dict
    aiokafka_kwargs(settings)    -> the keyword arguments of every aiokafka client

What each library supports (both: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL; TLS client
certificates):
    PLAIN, SCRAM-SHA-256, SCRAM-SHA-512  librdkafka and aiokafka
    OAUTHBEARER                          librdkafka (its OIDC client-credentials flow); aiokafka
                                         only with a token-provider object of the caller's, so
                                         Cerebelum refuses it until its aiokafka clients
                                         (mirror, API, CLI, Client) have one
    GSSAPI (Kerberos)                    not offered (needs system Kerberos set up on each host)
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cerebelum.errors import ConfigurationError
from cerebelum.security.secret import Secret, secret_from

if TYPE_CHECKING:
    from cerebelum.config import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ENV_PREFIX = "CEREBELUM_KAFKA_"


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """TLS and SASL settings of the Kafka connections; the password never shows in a repr."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: Secret | None = None
    # PEM files: the CA that signed the brokers' certificates (None: the system's CAs), and a
    # client certificate and key for brokers that authenticate clients by TLS (mTLS).
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        _check(self)

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        def get(name: str) -> str | None:
            return (env.get(ENV_PREFIX + name) or "").strip() or None

        protocol = (get("SECURITY_PROTOCOL") or "PLAINTEXT").upper()
        mechanism = get("SASL_MECHANISM")
        return cls(
            protocol=protocol,
            sasl_mechanism=mechanism.upper() if mechanism else None,
            username=get("SASL_USERNAME"),
            password=secret_from(
                env.get(ENV_PREFIX + "SASL_PASSWORD"),
                get("SASL_PASSWORD_FILE"),
                ENV_PREFIX + "SASL_PASSWORD",
            ),
            ca_file=get("SSL_CA_FILE"),
            cert_file=get("SSL_CERT_FILE"),
            key_file=get("SSL_KEY_FILE"),
        )


def _check(s: KafkaSecurity) -> None:
    """Refuse what a client would otherwise fail on later, deep inside, or silently ignore."""
    p = ENV_PREFIX
    if s.protocol not in PROTOCOLS:
        raise ConfigurationError(
            f"{p}SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}, not {s.protocol!r}"
        )
    if s.sasl:
        if s.sasl_mechanism == "OAUTHBEARER":
            raise ConfigurationError(
                f"{p}SASL_MECHANISM=OAUTHBEARER is not supported yet: the mirror, API and CLI "
                "use aiokafka, which needs a token provider Cerebelum does not ship; use "
                "SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"
            )
        if s.sasl_mechanism not in MECHANISMS:
            raise ConfigurationError(
                f"{p}SECURITY_PROTOCOL={s.protocol} needs {p}SASL_MECHANISM, one of "
                f"{', '.join(MECHANISMS)}"
                + (f", not {s.sasl_mechanism!r}" if s.sasl_mechanism else "")
            )
        if not s.username or s.password is None:
            raise ConfigurationError(
                f"{p}SASL_MECHANISM={s.sasl_mechanism} needs {p}SASL_USERNAME and "
                f"{p}SASL_PASSWORD (or {p}SASL_PASSWORD_FILE)"
            )
    elif s.sasl_mechanism or s.username or s.password is not None:
        raise ConfigurationError(
            f"SASL settings are set but {p}SECURITY_PROTOCOL={s.protocol} does not use SASL: "
            "use SASL_SSL (or SASL_PLAINTEXT)"
        )
    files = {"SSL_CA_FILE": s.ca_file, "SSL_CERT_FILE": s.cert_file, "SSL_KEY_FILE": s.key_file}
    named = {name: path for name, path in files.items() if path}
    if named and not s.tls:
        raise ConfigurationError(
            f"{', '.join(p + n for n in named)} set but {p}SECURITY_PROTOCOL={s.protocol} "
            "does not use TLS: use SSL or SASL_SSL"
        )
    if bool(s.cert_file) != bool(s.key_file):
        raise ConfigurationError(f"{p}SSL_CERT_FILE and {p}SSL_KEY_FILE go together: set both")
    for name, path in named.items():
        if not os.access(path, os.R_OK) or not os.path.isfile(path):
            raise ConfigurationError(f"{p}{name}: {path} is not a readable file")
    if named:
        ssl_context(s)  # a file that is not PEM, or a key that does not match, fails here


def librdkafka_config(settings: Settings) -> dict[str, Any]:
    """`bootstrap.servers` and the security properties of a librdkafka client."""
    s = settings.kafka_security
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": s.protocol.lower(),
    }
    if s.sasl:
        assert s.password is not None  # checked in _check
        config.update(
            {
                "sasl.mechanism": s.sasl_mechanism,
                "sasl.username": s.username,
                "sasl.password": s.password.reveal(),
            }
        )
    if s.tls:
        if s.ca_file:
            config["ssl.ca.location"] = s.ca_file
        if s.cert_file:
            config["ssl.certificate.location"] = s.cert_file
            config["ssl.key.location"] = s.key_file
        # The broker's certificate must name the host dialled (librdkafka's default since 2.0,
        # written out so nobody turns it off by accident).
        config["ssl.endpoint.identification.algorithm"] = "https"
    return config


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """`bootstrap_servers` and the security keyword arguments of an aiokafka client (consumer,
    producer or admin client)."""
    s = settings.kafka_security
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": s.protocol,
    }
    if s.sasl:
        assert s.password is not None  # checked in _check
        kwargs.update(
            sasl_mechanism=s.sasl_mechanism,
            sasl_plain_username=s.username,
            sasl_plain_password=s.password.reveal(),
        )
    if s.tls:
        kwargs["ssl_context"] = ssl_context(s)
    return kwargs


def ssl_context(s: KafkaSecurity) -> ssl.SSLContext:
    """The TLS context of an aiokafka client: the CA file's (or the system's) roots, host
    names checked, and the client certificate if one is set."""
    from aiokafka.helpers import create_ssl_context

    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=s.ca_file, certfile=s.cert_file, keyfile=s.key_file
        )
        return context
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"cannot use the Kafka TLS files (CA {s.ca_file}, certificate {s.cert_file}, "
            f"key {s.key_file}): {exc}"
        ) from None
