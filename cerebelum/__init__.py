"""Cerebelum: durable Python workflows on Kafka partitions."""

from cerebelum.client import Client, ExecutionResult
from cerebelum.config import Settings
from cerebelum.core.rules import (
    RetryPolicy,
    back_to,
    branch,
    continue_,
    diverge,
    fail,
    retry,
    skip_to,
)
from cerebelum.core.workflow import (
    RateLimit,
    StepContext,
    Workflow,
    approval,
    child,
    children,
    sleep,
    step,
    wait_for_signal,
)
from cerebelum.errors import CerebelumError, StepError

__all__ = [
    "CerebelumError",
    "Client",
    "ExecutionResult",
    "RateLimit",
    "RetryPolicy",
    "Settings",
    "StepContext",
    "StepError",
    "Workflow",
    "approval",
    "back_to",
    "branch",
    "child",
    "children",
    "continue_",
    "diverge",
    "fail",
    "retry",
    "skip_to",
    "sleep",
    "step",
    "wait_for_signal",
]
