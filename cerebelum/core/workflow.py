"""The workflow model: steps joined into a timeline.

    @step
    def validate(inputs): ...
    @step
    async def charge(ctx, validate): ...       # receives validate's result by parameter name
    order = Workflow("order", validate >> charge >> ship)

A step's parameters are filled by name: `inputs` is the execution's inputs, `ctx` a
`StepContext`, and any other name is the result of the earlier step of that name. Names are
checked when the workflow is built, so a typo fails at import time, not mid-execution.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cerebelum.errors import WorkflowDefinitionError

SPECIAL_PARAMS = frozenset({"inputs", "ctx"})


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step knows about the run it belongs to."""

    execution_id: str
    workflow: str
    workflow_version: str
    step: str
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and re-dispatches of this step: use it for side effects."""
        return f"{self.execution_id}:{self.step}"


class Step:
    """A named unit of work wrapping a plain or async function."""

    __slots__ = ("name", "fn", "is_async", "params")

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.is_async = inspect.iscoroutinefunction(fn)
        self.params: tuple[str, ...] = tuple(inspect.signature(fn).parameters)

    def __rshift__(self, other: Step | Timeline) -> Timeline:
        return Timeline([self]) >> other

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


def step(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Declare a step: `@step` or `@step(name="...")`."""
    if fn is None:
        return lambda f: Step(f, name=name)
    return Step(fn, name=name)


class Timeline:
    """Steps in the order they run."""

    __slots__ = ("steps",)

    def __init__(self, steps: Iterable[Step]) -> None:
        self.steps = list(steps)

    def __rshift__(self, other: Step | Timeline) -> Timeline:
        tail = other.steps if isinstance(other, Timeline) else [other]
        return Timeline([*self.steps, *tail])

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)


class Workflow:
    """A named, versioned timeline of steps."""

    def __init__(
        self, name: str, timeline: Timeline | Step | Iterable[Step], version: str | None = None
    ) -> None:
        if isinstance(timeline, Step):
            timeline = Timeline([timeline])
        self.name = name
        self.steps: tuple[Step, ...] = tuple(timeline)
        self._validate()
        self.index = {s.name: i for i, s in enumerate(self.steps)}
        self.version = version or self._definition_hash()

    def _validate(self) -> None:
        if not self.name:
            raise WorkflowDefinitionError(self.name, "a workflow needs a name")
        if not self.steps:
            raise WorkflowDefinitionError(self.name, "a workflow needs at least one step")
        seen: set[str] = set()
        for s in self.steps:
            if not isinstance(s, Step):
                raise WorkflowDefinitionError(self.name, f"{s!r} is not a @step")
            if s.name in seen:
                raise WorkflowDefinitionError(self.name, f"step {s.name!r} appears twice")
            for p in s.params:
                if p not in SPECIAL_PARAMS and p not in seen:
                    raise WorkflowDefinitionError(
                        self.name,
                        f"step {s.name!r} takes {p!r}, which is neither 'inputs', 'ctx' "
                        "nor an earlier step",
                    )
            seen.add(s.name)

    def _definition_hash(self) -> str:
        """A version that changes when the shape of the workflow changes."""
        shape = "|".join(f"{s.name}({','.join(s.params)})" for s in self.steps)
        return hashlib.sha256(shape.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, version={self.version!r})"


class Registry:
    """The workflows a worker can run, by name."""

    def __init__(self, workflows: Iterable[Workflow] = ()) -> None:
        self._by_name: dict[str, Workflow] = {}
        for wf in workflows:
            self.add(wf)

    def add(self, wf: Workflow) -> None:
        if wf.name in self._by_name and self._by_name[wf.name] is not wf:
            raise WorkflowDefinitionError(wf.name, "two workflows share this name")
        self._by_name[wf.name] = wf

    def get(self, name: str) -> Workflow | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> Registry:
        """Every Workflow found among a module's globals."""
        return cls(v for v in namespace.values() if isinstance(v, Workflow))
