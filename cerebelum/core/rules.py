"""What happens after a step: retry policies, diverge and branch rules, and their actions.

    diverge(charge, on=CardDeclined, then=fail())            # on a step's error
    diverge(reserve, when=lambda r: r["backorder"], then=back_to(validate))   # on its result
    branch(validate, when=lambda r: r["total"] > 1000, then=skip_to(approve))

Actions: retry() (with the step's retry policy), back_to(step), skip_to(step), fail(reason),
continue_() (carry on with the next node). Rules are checked in the order they are declared;
the first that matches wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

RETRY = "retry"
BACK_TO = "back_to"
SKIP_TO = "skip_to"
FAIL = "fail"
CONTINUE = "continue"


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    target: str | None = None  # a node name, for back_to and skip_to
    reason: str | None = None  # for fail

    def describe(self) -> str:
        return f"{self.kind}({self.target or self.reason or ''})"


def _name(target: Any) -> str:
    return target if isinstance(target, str) else target.name


def retry() -> Action:
    return Action(RETRY)


def back_to(target: Any) -> Action:
    return Action(BACK_TO, _name(target))


def skip_to(target: Any) -> Action:
    return Action(SKIP_TO, _name(target))


def fail(reason: str | None = None) -> Action:
    return Action(FAIL, reason=reason)


def continue_() -> Action:
    return Action(CONTINUE)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing step is tried again. Waits between attempts are durable timers.

    The wait before attempt n+1 is initial_interval * backoff**(n-1), capped at max_interval,
    then spread by +/- jitter (a fraction) so retries of many executions do not stampede.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.1
    non_retryable: tuple[str, ...] = ()

    def __init__(
        self,
        max_attempts: int = 3,
        initial_interval: float = 1.0,
        backoff: float = 2.0,
        max_interval: float = 60.0,
        jitter: float = 0.1,
        non_retryable: Iterable[type[BaseException] | str] = (),
    ) -> None:
        if max_attempts < 1 or initial_interval < 0 or backoff < 1 or not 0 <= jitter <= 1:
            raise ValueError(
                "RetryPolicy: max_attempts >= 1, intervals >= 0, backoff >= 1, jitter in [0, 1]"
            )
        object.__setattr__(self, "max_attempts", max_attempts)
        object.__setattr__(self, "initial_interval", initial_interval)
        object.__setattr__(self, "backoff", backoff)
        object.__setattr__(self, "max_interval", max_interval)
        object.__setattr__(self, "jitter", jitter)
        object.__setattr__(self, "non_retryable", tuple(_type_name(t) for t in non_retryable))

    def delay_ms(self, attempt: int, seed: str) -> int:
        """The wait after failed `attempt`; deterministic in `seed` (replays give the same)."""
        base = min(self.initial_interval * self.backoff ** (attempt - 1), self.max_interval)
        if self.jitter:
            digest = hashlib.blake2b(f"{seed}:{attempt}".encode(), digest_size=4).digest()
            unit = int.from_bytes(digest, "big") / 0xFFFFFFFF  # in [0, 1]
            base *= 1 + self.jitter * (2 * unit - 1)
        return max(0, int(base * 1000))

    def allows(self, next_attempt: int, error_types: list[str]) -> bool:
        return next_attempt <= self.max_attempts and not any(
            t in self.non_retryable for t in error_types
        )


# Used by `retry()` on a step that declares no policy of its own.
DEFAULT_RETRY = RetryPolicy()


def _type_name(t: type[BaseException] | str) -> str:
    return t if isinstance(t, str) else t.__name__


@dataclass(frozen=True, slots=True)
class Rule:
    """A diverge (kind="diverge") or branch (kind="branch") rule on one node."""

    kind: str
    node: str
    then: Action
    on: tuple[str, ...] = ()  # error type names (diverge on error)
    when: Callable[[Any], bool] | None = field(default=None, compare=False)  # on the result

    def matches_error(self, error_types: list[str]) -> bool:
        return bool(self.on) and any(t in error_types for t in self.on)

    def describe(self) -> str:
        cond = (
            f"on={','.join(self.on)}" if self.on else f"when={getattr(self.when, '__name__', '?')}"
        )
        return f"{self.kind}({self.node}, {cond}, then={self.then.describe()})"


def diverge(
    node: Any,
    *,
    then: Action,
    on: type[BaseException] | str | Iterable[type[BaseException] | str] | None = None,
    when: Callable[[Any], bool] | None = None,
) -> Rule:
    """On `node`'s error of a type in `on`, or on a result for which `when` is true: `then`."""
    if (on is None) == (when is None):
        raise ValueError("diverge takes exactly one of on= (errors) or when= (results)")
    kinds: tuple[str, ...] = ()
    if on is not None:
        items = on if isinstance(on, (list, tuple, set, frozenset)) else [on]
        kinds = tuple(_type_name(t) for t in items)
    return Rule("diverge", _name(node), then, kinds, when)


def branch(node: Any, *, when: Callable[[Any], bool], then: Action) -> Rule:
    """After `node` completes, if `when(result)`: `then` (skip_to, back_to or fail)."""
    if then.kind not in (SKIP_TO, BACK_TO, FAIL):
        raise ValueError("branch actions are skip_to, back_to or fail")
    return Rule("branch", _name(node), then, (), when)
