"""Log formats (cerebelum.telemetry.logs): JSON lines carry the execution's context."""

from __future__ import annotations

import io
import logging
import sys

import orjson
import pytest

from cerebelum.telemetry.logs import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    log_context,
    set_log_context,
)


def record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("cerebelum.test")
    exc_info = extra.pop("exc_info", None)
    return logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, message, args or ("world",),
        exc_info, extra=extra or None,  # type: ignore[arg-type]
    )  # fmt: skip


def as_json(rec: logging.LogRecord) -> dict:
    line = JsonFormatter().format(rec)
    assert "\n" not in line  # one object per line, whatever the message holds
    return orjson.loads(line)


def test_a_json_line_has_the_basics() -> None:
    out = as_json(record())
    assert out["message"] == "hello world"
    assert out["level"] == "WARNING" and out["logger"] == "cerebelum.test"
    assert out["timestamp"].endswith("Z") and "T" in out["timestamp"]
    assert set(out) == {"timestamp", "level", "logger", "message"}  # no context: no fields


def test_context_fields_come_from_the_context_and_extra_wins() -> None:
    with log_context(execution_id="e-1", workflow="w3", step="step1"):
        out = as_json(record(partition=7, step="step2"))
    assert (out["execution_id"], out["workflow"], out["step"], out["partition"]) == (
        "e-1", "w3", "step2", 7,
    )  # fmt: skip
    assert "execution_id" not in as_json(record())  # the context ended with the block


def test_set_log_context_lasts_for_the_copied_context() -> None:
    import contextvars

    def inside() -> dict:
        set_log_context(execution_id="e-9")
        return as_json(record())

    assert contextvars.copy_context().run(inside)["execution_id"] == "e-9"
    assert "execution_id" not in as_json(record())


def test_exceptions_and_text_tracebacks_go_to_one_field() -> None:
    try:
        raise ValueError("multi\nline")
    except ValueError:
        out = as_json(record(exc_info=sys.exc_info()))
    assert out["exception"].startswith("Traceback") and "ValueError: multi" in out["exception"]
    given = as_json(record(traceback="Traceback (most recent call last):\n  boom\n"))
    assert given["exception"] == "Traceback (most recent call last):\n  boom"


def test_text_shows_a_text_traceback_after_the_line() -> None:
    line = TextFormatter().format(record(traceback="Traceback ...\nKeyError: 'x'\n"))
    assert line.endswith("WARNING cerebelum.test: hello world\nTraceback ...\nKeyError: 'x'")


def test_configure_logging_json_writes_parsable_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        configure_logging("json")
        logging.getLogger("cerebelum.x").info("one %d", 1)
        logging.getLogger("cerebelum.x").warning("two\nlines")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry["message"] for entry in lines] == ["one 1", "two\nlines"]


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("xml")
