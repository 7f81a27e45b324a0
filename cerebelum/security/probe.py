"""Why a broker refuses a client: the reason aiokafka only logs.

aiokafka turns a failed TLS handshake or SASL authentication during bootstrap into "Unable to
bootstrap", the real cause logged at ERROR (and silenced by our quiet modes). When a client
cannot bootstrap, `refusal` opens one connection the same way to say why, so the error a person
sees is "authentication failed", not "did not answer".
"""

from __future__ import annotations

import asyncio
import ssl

from cerebelum.config import Settings
from cerebelum.security.kafka import aiokafka_kwargs

# Errors that say a broker was reached and refused us (anything else: it was not reached).
_AUTH_ERRORS = ("SaslAuthenticationFailed", "UnsupportedSaslMechanism", "IllegalSaslState")


async def refusal(settings: Settings, timeout: float) -> str | None:
    """The reason the first bootstrap broker refuses this client's TLS or SASL, or None if it
    accepts the connection or cannot be reached at all."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaConnectionError
    from aiokafka.protocol.metadata import MetadataRequest

    host, _, port = settings.kafka_bootstrap.split(",")[0].strip().rpartition(":")
    kwargs = aiokafka_kwargs(settings)
    del kwargs["bootstrap_servers"]
    protocol = settings.kafka_security.protocol
    try:
        async with asyncio.timeout(timeout):
            conn = await create_conn(
                host.strip("[]"), int(port), request_timeout_ms=int(timeout * 1000), **kwargs
            )
            try:
                await conn.send(MetadataRequest[0]([]))
            finally:
                conn.close()
    except ssl.SSLCertVerificationError as exc:
        return f"the broker's TLS certificate was not accepted ({exc.verify_message})"
    except ssl.SSLError as exc:
        return f"the TLS handshake failed ({exc.reason or exc}); is {protocol} right?"
    except KafkaConnectionError as exc:
        if "closed" in str(exc):
            return (
                f"the broker closed the connection ({protocol}): does this listener need "
                "TLS or SASL (CEREBELUM_KAFKA_SECURITY_PROTOCOL)?"
            )
        return None
    except Exception as exc:  # noqa: BLE001 - only the refusals below are ours to name
        if type(exc).__name__ in _AUTH_ERRORS:
            return f"authentication failed ({exc})"
        return None
    return None
