"""Backoff delays and waiting for a service (cerebelum/backoff.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cerebelum.backoff import Backoff, until_ready


def test_delays_double_up_to_the_cap_and_reset() -> None:
    backoff = Backoff(0.2, 1.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.attempts == 5
    backoff.reset()
    assert backoff.next_delay() == 0.2


async def test_until_ready_retries_what_it_is_told_to_and_logs_one_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionRefusedError(111, "refused\nsecond line")
        return "up"

    caplog.set_level(logging.WARNING)
    result = await until_ready(
        "svc", attempt, retry_on=lambda e: isinstance(e, OSError), backoff=Backoff(0.01, 0.01)
    )
    assert result == "up" and calls == 3
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("svc not reachable" in m and "\n" not in m for m in lines)


async def test_until_ready_raises_what_it_does_not_retry() -> None:
    async def attempt() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await until_ready("svc", attempt, retry_on=lambda e: isinstance(e, OSError))


async def test_until_ready_returns_none_once_stopping_is_set() -> None:
    stopping = asyncio.Event()

    async def attempt() -> None:
        raise OSError("down")

    task = asyncio.get_running_loop().create_task(
        until_ready("svc", attempt, retry_on=lambda e: True, stopping=stopping,
                    backoff=Backoff(30, 30))
    )  # fmt: skip
    await asyncio.sleep(0.05)
    stopping.set()
    assert await asyncio.wait_for(task, 1) is None
