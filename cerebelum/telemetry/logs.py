"""Logging, configured once per process by the CLI: human-readable text, or JSON lines.

    configure_logging("json", verbose=False)    # CEREBELUM_LOG_FORMAT=json

In JSON, each record is one object on one line:

    {"timestamp": "2026-12-02T01:02:03.456Z", "level": "WARNING", "logger": "cerebelum.worker",
     "message": "...", "execution_id": "...", "workflow": "...", "step": "...", "partition": 7,
     "exception": "Traceback ..."}

The execution fields appear where they are known: given to one call (`extra={"step": ...}`), or
set for a stretch of code with `log_context(...)` (a context variable, so a step's task, and
the thread a plain step runs in, carry its execution, workflow and step into every line logged
while it runs, the user's own lines included).

A traceback known only as text (a failed step's, which may come from a child process) is
given as `extra={"traceback": text}`: both formats show it where `exc_info` would put one.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

TEXT = "text"
JSON = "json"
LOG_FORMATS = (TEXT, JSON)

# What a JSON line may carry beside the basics, in this order.
CONTEXT_FIELDS = ("execution_id", "workflow", "step", "partition")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "cerebelum_log_context", default=None
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (execution_id, workflow, step, partition) to every record logged inside."""
    current = _context.get()
    token = _context.set({**current, **fields} if current else fields)
    try:
        yield
    finally:
        _context.reset(token)


def set_log_context(**fields: Any) -> None:
    """Like log_context, for the rest of the current context (a task or a copied context):
    what a step's own task sets once, cheaper than entering a context manager."""
    current = _context.get()
    _context.set({**current, **fields} if current else fields)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _context.get()
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is None and context is not None:
                value = context.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        else:
            text = getattr(record, "traceback", None)
            if text:
                out["exception"] = text.rstrip()
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """The human-readable format, plus a traceback given as text (`extra={"traceback": ...}`)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        text = getattr(record, "traceback", None)
        if text and not record.exc_info:
            line += "\n" + text.rstrip()
        return line


def _utc(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def configure_logging(log_format: str = TEXT, verbose: bool = False) -> None:
    """Send the root logger's records to stderr in `log_format`, replacing earlier handlers
    (so it is called once, at the edge: the CLI)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == JSON else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
