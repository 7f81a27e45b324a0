"""Cerebelum: durable Python workflows on Kafka partitions."""

from cerebelum.client import Client, ExecutionResult
from cerebelum.config import Settings
from cerebelum.core.workflow import StepContext, Workflow, step
from cerebelum.errors import CerebelumError, StepError

__all__ = [
    "CerebelumError",
    "Client",
    "ExecutionResult",
    "Settings",
    "StepContext",
    "StepError",
    "Workflow",
    "step",
]
