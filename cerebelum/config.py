"""Settings, built once at the edge (CLI, app factory) from the environment.

Nothing deeper in the code reads os.environ: processes receive a `Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit, urlunsplit

from cerebelum.constants import DEFAULT_NAMESPACE, Names, names, namespace_problem
from cerebelum.errors import ConfigurationError
from cerebelum.security.kafka import KafkaSecurity
from cerebelum.security.redact import redact
from cerebelum.security.secret import secret_from
from cerebelum.telemetry.logs import LOG_FORMATS, TEXT

DEFAULT_KAFKA = "127.0.0.1:19092"
DEFAULT_DATABASE_URL = "postgresql://cerebelum@127.0.0.1:15432/cerebelum"


@dataclass(frozen=True, slots=True)
class Settings:
    # Whose topics, groups and schema this process uses (cerebelum.constants.names): several
    # apps share a Kafka cluster and a database, one namespace each. CEREBELUM_NAMESPACE.
    namespace: str = DEFAULT_NAMESPACE
    kafka_bootstrap: str = DEFAULT_KAFKA
    # TLS and SASL of every Kafka client (cerebelum.security.kafka; README, "Security").
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # May hold a password (CEREBELUM_DATABASE_PASSWORD_FILE puts it there): shown redacted.
    database_url: str = DEFAULT_DATABASE_URL
    # The worker group's protocol: "consumer" (KIP-848, Kafka 4.0+: the broker assigns
    # partitions incrementally and owns the session timeout, group.consumer.session.timeout.ms)
    # or "classic" (cooperative-sticky, with the two settings below).
    group_protocol: str = "consumer"
    # Crash detection time of classic-protocol members (the workers with group_protocol
    # "classic", and the mirror): a dead member's partitions move after this long. 6 s rides
    # out a few seconds of a stalled event loop; 3 s gives faster failovers at more risk of
    # false alarms.
    session_timeout_ms: int = 6_000
    # A third of the session timeout, as Kafka recommends, so two lost heartbeats are survivable.
    heartbeat_interval_ms: int = 2_000
    # The broker aborts a transaction open longer than this. A transaction lasts milliseconds,
    # so this only matters when a worker dies with one open: its partitions' new owners fence
    # it at once when they can name it (its id is on the partition's snapshots), and wait up
    # to this long when they cannot (a partition with no snapshot yet). Long enough that a
    # loaded broker's slow commit is not aborted (each abort redoes the transaction).
    transaction_timeout_ms: int = 10_000
    # Set for static membership: a restarted worker with the same id gets its partitions back
    # without a rebalance (but a crashed one is only detected after session_timeout_ms).
    group_instance_id: str | None = None
    # How long SIGTERM waits for running steps before leaving the group anyway.
    shutdown_grace_s: float = 10.0
    # Group commit over time: transactions start at most this often. Each costs the broker
    # ~5 ms of CPU (and every read_committed consumer a fetch) whatever it carries, so under a
    # steady trickle, transitions that arrive while waiting share one. An input after a quiet
    # spell is committed at once; under load the wait adds up to this much per transition.
    # Measured trade-off (CPU per execution against latency): 3 ms against 10 ms, six
    # alternating runs each: closed-loop p50 34 / 49 ms, p99 at 50/s 291 / 543 ms, for ~8 % more
    # CPU per execution at 50/s (docs/decisions.md §10, bench/README.md).
    commit_interval_ms: int = 3
    # Steps running at once per worker; beyond it new step effects queue.
    max_concurrent_steps: int = 1_000
    # A step run without a timeout of its own fails with StepTimeout after this (and is
    # retried under its policy), so a hung step never keeps its execution running forever;
    # 0 (CEREBELUM_STEP_TIMEOUT_S=0) means no default.
    step_timeout_s: float = 3_600.0
    # "text" (for people) or "json" (one object per line, for log collectors).
    log_format: str = TEXT
    # The worker's and the mirror's own HTTP endpoint (/metrics, /healthz, /readyz): None
    # (unset) serves none, so several workers on one machine never collide by default; 0 lets
    # the system pick a free port (logged at start); any other number is that port.
    worker_http_port: int | None = None
    mirror_http_port: int | None = None
    # The address those endpoints listen on: loopback unless a scraper elsewhere needs them.
    http_host: str = "127.0.0.1"
    # Where the worker's OpenTelemetry spans go: None (tracing off: OpenTelemetry is not even
    # imported), "otlp" (OTLP over HTTP/protobuf, to OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT) or
    # "console" (stdout). From `traces_exporter_from_env`; the README's "Tracing" says when.
    traces_exporter: str | None = None
    # Tests only (fault injection): a worker that finds this file between a transaction's
    # offsets and its commit deletes it and stops itself (SIGSTOP), to be a zombie on cue.
    fault_pause_before_commit: str | None = None

    def __post_init__(self) -> None:
        problem = namespace_problem(self.namespace)
        if problem is not None:
            raise ConfigurationError(f"CEREBELUM_NAMESPACE / --namespace: {problem}")

    @property
    def names(self) -> Names:
        """The namespace's topics, groups, ids, schema and channel."""
        return names(self.namespace)

    @property
    def namespace_database_url(self) -> str:
        """`database_url` bound to the namespace's schema, for every connection a process makes
        (asyncpg sends the URL's extra query parameters as server settings, here search_path).
        The default namespace's is `database_url` itself: its tables stay where they were."""
        return schema_url(self.database_url, self.names.schema)

    def __repr__(self) -> str:
        # The database URL redacted; kafka_security hides its own password.
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["database_url"] = redact(self.database_url)
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            namespace=(env.get("CEREBELUM_NAMESPACE") or defaults.namespace).strip(),
            kafka_bootstrap=env.get("CEREBELUM_KAFKA", defaults.kafka_bootstrap),
            kafka_security=KafkaSecurity.from_env(env),
            database_url=database_url_from_env(env, defaults.database_url),
            session_timeout_ms=int(
                env.get("CEREBELUM_SESSION_TIMEOUT_MS", defaults.session_timeout_ms)
            ),
            group_protocol=env.get("CEREBELUM_GROUP_PROTOCOL", defaults.group_protocol),
            transaction_timeout_ms=int(
                env.get("CEREBELUM_TRANSACTION_TIMEOUT_MS", defaults.transaction_timeout_ms)
            ),
            fault_pause_before_commit=env.get("CEREBELUM_FAULT_PAUSE_BEFORE_COMMIT") or None,
            heartbeat_interval_ms=int(
                env.get("CEREBELUM_HEARTBEAT_INTERVAL_MS", defaults.heartbeat_interval_ms)
            ),
            group_instance_id=env.get("CEREBELUM_GROUP_INSTANCE_ID") or None,
            commit_interval_ms=int(
                env.get("CEREBELUM_COMMIT_INTERVAL_MS", defaults.commit_interval_ms)
            ),
            shutdown_grace_s=float(
                env.get("CEREBELUM_SHUTDOWN_GRACE_S", defaults.shutdown_grace_s)
            ),
            max_concurrent_steps=int(
                env.get("CEREBELUM_MAX_CONCURRENT_STEPS", defaults.max_concurrent_steps)
            ),
            step_timeout_s=_non_negative(env, "CEREBELUM_STEP_TIMEOUT_S", defaults.step_timeout_s),
            log_format=_log_format(env.get("CEREBELUM_LOG_FORMAT") or defaults.log_format),
            worker_http_port=_port(env, "CEREBELUM_WORKER_HTTP_PORT"),
            mirror_http_port=_port(env, "CEREBELUM_MIRROR_HTTP_PORT"),
            http_host=env.get("CEREBELUM_HTTP_HOST") or defaults.http_host,
            traces_exporter=traces_exporter_from_env(env),
        )


# The exporters the worker can send spans through (cerebelum.telemetry.tracing).
TRACES_EXPORTERS = ("otlp", "console")
# OTLP encodings: the HTTP/protobuf exporter only (the gRPC one would pull in grpcio).
OTLP_PROTOCOLS = ("http/protobuf",)


def traces_exporter_from_env(env: Mapping[str, str]) -> str | None:
    """The traces exporter the environment asks for, or None (tracing off).

    Off unless configured: CEREBELUM_TRACING=off, OTEL_SDK_DISABLED=true or
    OTEL_TRACES_EXPORTER=none turn it off whatever else is set; otherwise it is on when
    OTEL_TRACES_EXPORTER names an exporter, when an OTLP endpoint is set
    (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), or when
    CEREBELUM_TRACING=on (OTLP to the standard default, http://localhost:4318).
    """
    switch = (env.get("CEREBELUM_TRACING") or "").strip().lower()
    if switch not in ("", "on", "off"):
        raise ConfigurationError(f"CEREBELUM_TRACING must be 'on' or 'off', not {switch!r}")
    if switch == "off" or (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return None
    exporter = (env.get("OTEL_TRACES_EXPORTER") or "").strip().lower()
    if exporter == "none":
        return None
    if exporter and exporter not in TRACES_EXPORTERS:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER must be one of {', '.join(TRACES_EXPORTERS)} or none "
            f"for Cerebelum, not {exporter!r}"
        )
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not (exporter or endpoint or switch == "on"):
        return None
    exporter = exporter or "otlp"
    if exporter == "otlp":
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or OTLP_PROTOCOLS[0]
        )
        if protocol.strip().lower() not in OTLP_PROTOCOLS:
            raise ConfigurationError(
                f"Cerebelum exports traces over OTLP {', '.join(OTLP_PROTOCOLS)} only, not "
                f"{protocol!r} (OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL; a collector's HTTP "
                "port is 4318)"
            )
    return exporter


def database_url_from_env(env: Mapping[str, str], default: str = DEFAULT_DATABASE_URL) -> str:
    """CEREBELUM_DATABASE_URL, with the password of CEREBELUM_DATABASE_PASSWORD_FILE (a
    Kubernetes secret, say) put in, and its TLS files checked: a CA file that is missing
    fails here rather than as a TLS error on every connection attempt."""
    url = env.get("CEREBELUM_DATABASE_URL") or default
    password = secret_from(
        None, env.get("CEREBELUM_DATABASE_PASSWORD_FILE"), "CEREBELUM_DATABASE_PASSWORD"
    )
    try:
        parts = urlsplit(url)
        params = parse_qs(parts.query)
    except ValueError as exc:
        raise ConfigurationError(
            f"CEREBELUM_DATABASE_URL is not a URL: {redact(url)} ({exc})"
        ) from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"CEREBELUM_DATABASE_URL must start with postgresql://, not {redact(url)}"
        )
    for name in ("sslrootcert", "sslcert", "sslkey"):
        for path in params.get(name, []):
            if not Path(path).is_file():
                raise ConfigurationError(
                    f"CEREBELUM_DATABASE_URL names {name}={path}, which is not a readable file"
                )
    if password is None:
        return url
    if parts.password is not None:
        raise ConfigurationError(
            "CEREBELUM_DATABASE_URL has a password and CEREBELUM_DATABASE_PASSWORD_FILE is set: "
            "set one"
        )
    user, _, host = parts.netloc.rpartition("@")
    if not user:
        raise ConfigurationError(
            "CEREBELUM_DATABASE_PASSWORD_FILE needs a user in CEREBELUM_DATABASE_URL "
            "(postgresql://USER@host/db)"
        )
    netloc = f"{user}:{quote(password.reveal(), safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def schema_url(database_url: str, schema: str | None) -> str:
    """`database_url` whose connections use only `schema` (search_path): a namespace's tables
    live there, and a query never falls back to another schema's table of the same name."""
    if schema is None:
        return database_url
    parts = urlsplit(database_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
    query.append(("search_path", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _log_format(value: str) -> str:
    value = value.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"CEREBELUM_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    return value


def _non_negative(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigurationError(f"{name} must be a number of seconds >= 0, not {raw!r}")
    return value


def _port(env: Mapping[str, str], name: str) -> int | None:
    """A port from the environment: unset or empty is None (no endpoint), 0 any free port."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    port = int(raw)
    if not 0 <= port <= 65_535:
        raise ValueError(f"{name} must be a port number (0-65535), not {raw}")
    return port


# Hosts the API answers by default: the loopback names a browser on this machine uses. A
# browser page on another site that rebinds its own name to 127.0.0.1 (DNS rebinding) sends
# its own name as Host, so it gets 400.
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The HTTP API's security settings (README, "Security").

    Authentication is on unless CEREBELUM_API_AUTH=off says otherwise: with it on and no
    tokens file, the API refuses to start (cerebelum.api.tokens), so forgetting the file never
    leaves an open API behind.
    """

    # The tokens file: one `name:scope,scope:sha256:<hex>` line per token, hashes only.
    tokens_file: str | None = None
    auth: bool = True
    # Host header values the API answers (port ignored); "*" answers any, "*.example.com" any
    # subdomain.
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    # Origins a browser page may call the API from (CORS); none by default.
    cors_origins: tuple[str, ...] = ()
    # JWTs from an OpenID Connect provider (cerebelum.api.oidc): its JWKS, and the audience and
    # issuer a token must name (both required with a JWKS).
    jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None

    def __post_init__(self) -> None:
        if self.jwks_url is not None and not (self.jwt_audience and self.jwt_issuer):
            raise ConfigurationError(
                "CEREBELUM_API_JWKS_URL needs CEREBELUM_API_JWT_AUDIENCE and "
                "CEREBELUM_API_JWT_ISSUER: a JWT for another service must not open this API"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if env is None else env
        auth = (env.get("CEREBELUM_API_AUTH") or "on").strip().lower()
        if auth not in ("on", "off"):
            raise ConfigurationError(f"CEREBELUM_API_AUTH must be 'on' or 'off', not {auth!r}")
        hosts = _list(env.get("CEREBELUM_API_ALLOWED_HOSTS"))
        return cls(
            tokens_file=env.get("CEREBELUM_API_TOKENS_FILE") or None,
            auth=auth == "on",
            allowed_hosts=hosts or DEFAULT_ALLOWED_HOSTS,
            cors_origins=_list(env.get("CEREBELUM_API_CORS_ORIGINS")),
            jwks_url=env.get("CEREBELUM_API_JWKS_URL") or None,
            jwt_audience=env.get("CEREBELUM_API_JWT_AUDIENCE") or None,
            jwt_issuer=env.get("CEREBELUM_API_JWT_ISSUER") or None,
        )


def _list(value: str | None) -> tuple[str, ...]:
    """A comma-separated setting as a tuple, blanks dropped."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())
