"""Workflows for tests/integration/test_versions.py: one deploy of an app, chosen by
CEREBELUM_TEST_DEPLOY (old / new / both), as a worker loads it with `--app tests.apps_versions`.

Three workflows, each parked at an approval by the old code (version "v1"), then:
- `ver_held`: the new code has only a v2 of another shape: its executions are held (blocked)
  until the old code is back ("both");
- `ver_moved`: v2 declares a mapping from v1 that covers the approval: they move to v2;
- `ver_refused`: v2 declares a mapping from v1 that leaves the approval out: refused, blocked.
"""

from __future__ import annotations

import os

from cerebelum import Workflow, approval, step

DEPLOY = os.environ.get("CEREBELUM_TEST_DEPLOY", "old")


@step
def prepare(inputs: dict) -> dict:
    return {"id": inputs.get("id")}


@step
def finish(prepare: dict, approval: dict) -> dict:
    return {"id": prepare["id"], "approved_by": approval.get("by"), "shape": "v1"}


@step
def check(inputs: dict) -> dict:
    return {"id": inputs.get("id")}


@step
def finish_v2(check: dict, approval: dict) -> dict:
    return {"id": check["id"], "approved_by": approval.get("by"), "shape": "v2"}


def v1(name: str) -> Workflow:
    return Workflow(name, prepare >> approval("approval") >> finish, version="v1")


def v2(name: str, migrate_from: dict[str, dict[str, str]] | None = None) -> Workflow:
    return Workflow(
        name, check >> approval("approval") >> finish_v2, version="v2", migrate_from=migrate_from
    )


if DEPLOY in ("old", "both"):
    held_v1 = v1("ver_held")
if DEPLOY in ("new", "both"):
    held_v2 = v2("ver_held")
if DEPLOY == "old":
    moved_v1 = v1("ver_moved")
    refused_v1 = v1("ver_refused")
else:
    moved_v2 = v2(
        "ver_moved", {"v1": {"prepare": "check", "approval": "approval", "finish": "finish_v2"}}
    )
    refused_v2 = v2("ver_refused", {"v1": {"prepare": "check", "finish": "finish_v2"}})
