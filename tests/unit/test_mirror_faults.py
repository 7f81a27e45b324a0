"""Which database failures the mirror waits out and which ones it sets aside (mirror/faults.py)."""

from __future__ import annotations

import asyncpg
import pytest

from cerebelum.mirror.faults import Fault, classify, is_retried, sqlstate


@pytest.mark.parametrize(
    ("exc", "fault"),
    [
        # The server or the network: retried.
        (asyncpg.ConnectionDoesNotExistError("gone"), Fault.TRANSIENT),  # 08003
        (asyncpg.CannotConnectNowError("starting up"), Fault.TRANSIENT),  # 57P03
        (asyncpg.AdminShutdownError("shutdown"), Fault.TRANSIENT),  # 57P01
        (asyncpg.SerializationError("retry"), Fault.TRANSIENT),  # 40001
        (asyncpg.DeadlockDetectedError("deadlock"), Fault.TRANSIENT),  # 40P01
        (asyncpg.TooManyConnectionsError("full"), Fault.TRANSIENT),  # 53300
        (asyncpg.DiskFullError("full"), Fault.TRANSIENT),  # 53100
        (asyncpg.LockNotAvailableError("locked"), Fault.TRANSIENT),  # 55P03
        (asyncpg.QueryCanceledError("statement timeout"), Fault.TRANSIENT),  # 57014
        (ConnectionRefusedError(111, "refused"), Fault.TRANSIENT),
        (TimeoutError(), Fault.TRANSIENT),
        (asyncpg.InterfaceError("the pool is closing"), Fault.TRANSIENT),
        # A pooled connection left mid-operation by a server shutting down (seen in the
        # PostgreSQL outage fault test: it killed the mirror).
        (
            asyncpg.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            ),
            Fault.TRANSIENT,
        ),
        # The database is not set up for the mirror: retried, never blamed on the rows.
        (asyncpg.UndefinedTableError("no events table"), Fault.SETUP),  # 42P01
        (asyncpg.UndefinedColumnError("no column"), Fault.SETUP),  # 42703
        (asyncpg.InsufficientPrivilegeError("denied"), Fault.SETUP),  # 42501
        (asyncpg.InvalidCatalogNameError("no database"), Fault.SETUP),  # 3D000
        (asyncpg.InvalidPasswordError("auth"), Fault.SETUP),  # 28P01
        (asyncpg.ReadOnlySQLTransactionError("standby"), Fault.SETUP),  # 25006
        # The rows: bisected and set aside.
        (asyncpg.CheckViolationError("check"), Fault.DATA),  # 23514
        (asyncpg.UniqueViolationError("unique"), Fault.DATA),  # 23505
        (asyncpg.RaiseError("trigger"), Fault.DATA),  # P0001
        (asyncpg.InvalidTextRepresentationError("bad json"), Fault.DATA),  # 22P02
        (asyncpg.ProgramLimitExceededError("too big"), Fault.DATA),  # 54000
        (asyncpg.DataError("bad value"), Fault.DATA),  # 22000
        (asyncpg.exceptions.DataError("x"), Fault.DATA),
        # Not a database failure: the mirror's own bug, raised.
        (KeyError("x"), None),
        (RuntimeError("x"), None),
    ],
)
def test_classify(exc: BaseException, fault: Fault | None) -> None:
    assert classify(exc) is fault
    assert is_retried(exc) == (fault in (Fault.TRANSIENT, Fault.SETUP))


def test_an_argument_the_driver_cannot_encode_is_the_rows_fault() -> None:
    class EncodeError(asyncpg.InterfaceError, ValueError):
        pass

    assert classify(EncodeError("invalid input for query argument")) is Fault.DATA


def test_sqlstate_is_the_servers_or_none() -> None:
    assert sqlstate(asyncpg.CheckViolationError("x")) == "23514"
    assert sqlstate(asyncpg.InterfaceError("x")) is None
    assert sqlstate(OSError()) is None
