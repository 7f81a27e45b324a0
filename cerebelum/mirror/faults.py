"""Which failures of a database write the mirror waits out, and which ones it sets aside.

    classify(exc) -> Fault.TRANSIENT | Fault.SETUP | Fault.DATA, or None (not a database error)

By SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html):

    TRANSIENT  the server or the network, not the rows: retry the same batch with backoff
               08xxx connection exception        40001 serialization failure
               40P01 deadlock detected           53xxx insufficient resources (disk, memory,
               55P03 lock not available                connections)
               57P0x admin/crash shutdown, cannot connect now (starting, recovering)
               57014 query cancelled (a statement timeout, an operator's pg_cancel_backend)
               58xxx system error (I/O) and, outside PostgreSQL, OSError, timeouts and
               asyncpg's connection errors (InterfaceError; InternalClientError, a
               connection left mid-operation when the server went away)
    SETUP      the database is not what the mirror needs (no schema, no rights, read-only, a
               wrong database): every row would fail alike, so setting rows aside would only
               empty the topic into mirror_rejects. Retried with backoff until an operator
               mends it (`cerebelum db migrate`, a GRANT, a failover to the primary).
    DATA       anything else: something in the rows (a CHECK or trigger, a value out of range,
               text the driver cannot encode). The batch is bisected down to the events that
               fail alone; those are recorded in mirror_rejects and the rest goes on.
"""

from __future__ import annotations

import enum

import asyncpg


class Fault(enum.Enum):
    TRANSIENT = "transient"
    SETUP = "setup"
    DATA = "data"


TRANSIENT_CLASSES = frozenset({"08", "53", "58"})
TRANSIENT_STATES = frozenset(
    {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "57P04", "57P05"}
)
SETUP_CLASSES = frozenset({"28", "3D", "3F"})  # authorization, database, schema names
SETUP_STATES = frozenset(
    {
        "25006",  # read-only transaction: a standby, or default_transaction_read_only
        "42501",  # insufficient privilege
        "42P01",  # undefined table: migrations not applied
        "42703",  # undefined column: migrations not applied
        "42883",  # undefined function
    }
)


def classify(exc: BaseException) -> Fault | None:
    """What kind of failure `exc` is for a mirror write; None when it is not a database error."""
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        if state in TRANSIENT_STATES or state[:2] in TRANSIENT_CLASSES:
            return Fault.TRANSIENT
        if state in SETUP_STATES or state[:2] in SETUP_CLASSES:
            return Fault.SETUP
        return Fault.DATA
    if isinstance(exc, asyncpg.InterfaceError):
        # A ValueError among them: asyncpg refused to encode an argument (the rows' fault);
        # the others are a closed connection or pool (the connection's).
        return Fault.DATA if isinstance(exc, ValueError) else Fault.TRANSIENT
    if isinstance(exc, (OSError, TimeoutError)):
        return Fault.TRANSIENT
    if isinstance(exc, asyncpg.InternalClientError):
        # "cannot switch to state 15; another operation is in progress": the connection's
        # protocol state broke when the server shut down under it. The pool drops the
        # connection on release; a fresh one works once the server is back.
        return Fault.TRANSIENT
    return None


def is_retried(exc: BaseException) -> bool:
    """True for failures the mirror waits out (TRANSIENT or SETUP): none is the rows' fault."""
    return classify(exc) in (Fault.TRANSIENT, Fault.SETUP)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a server's refusal; None when the driver refused before sending."""
    return getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
