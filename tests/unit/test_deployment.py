"""docker-compose.yml (for users with Docker) configures the broker as `cerebelum dev up` does."""

from __future__ import annotations

import re
from pathlib import Path

from cerebelum.dev.kafka import CLUSTER_SETTINGS

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def compose_env() -> dict[str, str]:
    """The KAFKA_* environment of the compose file's broker, as broker property names."""
    env = {}
    for name, value in re.findall(
        r"^\s+KAFKA_([A-Z_]+):\s*\"?([^\"\n]*)\"?\s*$", COMPOSE.read_text(), re.M
    ):
        env[name.lower().replace("_", ".")] = value
    return env


def test_the_compose_broker_behaves_like_the_dev_broker() -> None:
    env = compose_env()
    assert {key: env.get(key) for key in CLUSTER_SETTINGS} == CLUSTER_SETTINGS
