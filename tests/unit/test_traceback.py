"""A failed step's traceback: bounded, innermost frames kept, on its StepFailed event only."""

from __future__ import annotations

from cerebelum.core.commands import StartExecution, StepOutcome
from cerebelum.core.events import (
    MAX_TRACEBACK_BYTES,
    error_info,
    traceback_text,
    truncate_traceback,
)
from cerebelum.core.machine import decide
from cerebelum.core.workflow import Registry
from tests import apps

REGISTRY = Registry.from_namespace(vars(apps))


def deep(n: int) -> None:
    if n == 0:
        raise KeyError("the innermost frame")
    deeper(n - 1)  # two functions in turn: Python folds a frame repeated in a row


def deeper(n: int) -> None:
    deep(n)


def raised(n: int) -> BaseException:
    try:
        deep(n)
    except KeyError as exc:
        return exc
    raise AssertionError("deep() did not raise")


def test_a_short_traceback_is_kept_whole() -> None:
    text = traceback_text(raised(2))
    assert text.startswith("Traceback (most recent call last):")
    assert text.rstrip().endswith("KeyError: 'the innermost frame'")
    assert "cut" not in text


def test_a_long_traceback_keeps_its_head_and_innermost_frames_within_the_bound() -> None:
    text = traceback_text(raised(200))
    assert len(text.encode()) <= MAX_TRACEBACK_BYTES
    assert text.startswith("Traceback (most recent call last):\n  ... (")
    assert "bytes cut) ..." in text
    assert text.rstrip().endswith("KeyError: 'the innermost frame'")
    assert 'raise KeyError("the innermost frame")' in text  # the frame that raised


def test_one_huge_line_is_cut_from_its_start() -> None:
    text = "Traceback (most recent call last):\nValueError: " + "x" * 10_000 + "END\n"
    cut = truncate_traceback(text, 1_000)
    assert len(cut.encode()) <= 1_000 and cut.endswith("END\n")


def test_multibyte_text_stays_valid_within_the_bound() -> None:
    text = "Traceback (most recent call last):\n" + "  é€😀 frame\n" * 1_000
    cut = truncate_traceback(text, 500)
    assert len(cut.encode()) <= 500 and cut.endswith("😀 frame\n")


def failed_step(traceback: str | None) -> dict:
    state, _, effects = decide(None, StartExecution("e-1", "w3", {"n": 1}), 0, REGISTRY)
    (run,) = effects
    outcome = StepOutcome(
        "e-1", "step1", run.token, False, error=error_info("KeyError", "x"), traceback=traceback
    )
    _, events, _ = decide(state, outcome, 1, REGISTRY)
    (failed,) = [e for e in events if e["type"] == "StepFailed"]
    return failed


def test_step_failed_carries_the_traceback_it_is_given() -> None:
    assert failed_step("Traceback ...\nKeyError: 'x'\n")["traceback"].endswith("KeyError: 'x'\n")


def test_step_failed_without_a_traceback_has_no_field() -> None:
    assert "traceback" not in failed_step(None)  # the shape of older histories
    assert "traceback" not in failed_step("")


def test_run_step_names_its_workflow() -> None:
    _, _, (run,) = decide(None, StartExecution("e-2", "w3", {"n": 1}), 0, REGISTRY)
    assert run.workflow == "w3"


def test_the_outer_frames_of_the_machinery_are_left_out_but_never_the_last() -> None:
    whole = traceback_text(raised(1))
    assert "in raised" in whole and whole.count("  File ") == 4  # raised, deep, deeper, deep
    trimmed = traceback_text(raised(1), outer=lambda filename: True)
    assert trimmed.startswith("Traceback (most recent call last):")
    frames = [line for line in trimmed.splitlines() if line.startswith("  File ")]
    assert len(frames) == 1 and "in deep" in frames[0]  # everything outer dropped, not the last
    assert trimmed.rstrip().endswith("KeyError: 'the innermost frame'")
