from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cerebelum.core.commands import MAX_COMMAND_BYTES, StartExecution, parse_command, start_command
from cerebelum.errors import InvalidCommand, LimitExceeded

DOC = Path(__file__).resolve().parents[2] / "docs" / "start-command.md"


def test_the_documented_example_parses() -> None:
    example = re.search(r"```json\n(.*?)```", DOC.read_text(), re.S)
    assert example is not None
    cmd = parse_command(example.group(1).replace("\n", " ").encode())
    assert isinstance(cmd, StartExecution) and cmd.workflow == "order"


def test_encode_then_parse_round_trips() -> None:
    cmd = parse_command(start_command("e-1", "w3", {"n": 1}))
    assert (cmd.execution_id, cmd.workflow, cmd.inputs) == ("e-1", "w3", {"n": 1})


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"{oops", "not valid JSON"),
        (b'"a string"', "JSON object"),
        (b'{"type": "StartExecution", "workflow": "w"}', "execution_id"),
        (b'{"type": "StartExecution", "execution_id": "", "workflow": "w"}', "execution_id"),
        (b'{"type": "StartExecution", "execution_id": "e"}', "workflow"),
        (b'{"type": "Nope", "execution_id": "e"}', "unknown command type"),
        (
            b'{"type": "StartExecution", "execution_id": "e", "workflow": "w", "schema": 9}',
            "schema",
        ),
        (
            json.dumps(
                {"type": "StartExecution", "execution_id": "e" * 201, "workflow": "w"}
            ).encode(),
            "over the limit of 200",
        ),
    ],
)
def test_bad_commands_are_refused_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidCommand, match=reason):
        parse_command(raw)


def test_oversized_commands_are_refused() -> None:
    with pytest.raises(LimitExceeded):
        parse_command(b" " * (MAX_COMMAND_BYTES + 1))


@pytest.mark.parametrize(
    ("execution_id", "found"),
    [("a\x00b", "'\\x00'"), ("a/b", "'/'"), ("a\nb", "'\\n'"), ("..", "begin"), ("é", "begin")],
)
def test_ids_outside_the_alphabet_are_refused(execution_id: str, found: str) -> None:
    raw = json.dumps({"type": "StartExecution", "execution_id": execution_id, "workflow": "w"})
    with pytest.raises(InvalidCommand) as info:
        parse_command(raw.encode())
    assert found in info.value.reason


def test_a_signal_name_outside_the_alphabet_is_refused() -> None:
    raw = json.dumps({"type": "SendSignal", "execution_id": "e-1", "signal": "a/b"})
    with pytest.raises(InvalidCommand, match="field 'signal' may only contain"):
        parse_command(raw.encode())


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (TRACEPARENT, TRACEPARENT),
        # A later version may append fields: the first four are read, as version 00.
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what", TRACEPARENT),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what", None),  # 00: exactly
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),  # invalid version
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),  # zero trace id
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),  # zero span id
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),  # uppercase
        ("garbage", None),
        (42, None),
    ],
)
def test_a_start_keeps_a_valid_traceparent_and_drops_any_other(given: object, kept: str | None):
    raw = json.dumps(
        {"type": "StartExecution", "execution_id": "e", "workflow": "w", "traceparent": given}
    ).encode()
    command = parse_command(raw)
    assert isinstance(command, StartExecution) and command.traceparent == kept


def test_a_traceparent_is_recorded_on_the_start_and_carried_to_each_step_run() -> None:
    from cerebelum.core.machine import RunStep, decide
    from cerebelum.core.state import Execution
    from cerebelum.core.workflow import Registry
    from tests import apps

    registry = Registry.from_namespace(vars(apps))
    command = parse_command(start_command("e", "w3", {}, TRACEPARENT))
    state, events, effects = decide(None, command, 1, registry)
    assert state is not None and state.traceparent == TRACEPARENT
    assert events[0]["traceparent"] == TRACEPARENT
    (run,) = effects
    assert isinstance(run, RunStep) and run.traceparent == TRACEPARENT
    assert Execution.from_record(state.to_record()).traceparent == TRACEPARENT
    # Without one, neither the history nor the snapshot changes shape.
    state, events, _ = decide(None, parse_command(start_command("f", "w3", {})), 1, registry)
    assert state is not None and "traceparent" not in events[0]
    assert "traceparent" not in state.to_record()
