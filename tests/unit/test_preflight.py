"""What the entrances refuse, decided from what was read (pure)."""

from __future__ import annotations

from cerebelum.admin.cluster import GroupDescription, Member
from cerebelum.admin.preflight import unknown_workflow
from cerebelum.admin.workflows import (
    PublishedWorkflows,
    join_live,
    live_worker_ids,
    registry_record,
)
from cerebelum.core.workflow import Registry, Workflow, step


@step
def only(inputs: dict) -> dict:
    return inputs


def published(worker_id: str, at: int, **workflows: tuple[str, ...]) -> PublishedWorkflows:
    return PublishedWorkflows(worker_id, at, dict(workflows))


def test_a_record_lists_versions_newest_first() -> None:
    registry = Registry(
        [Workflow("b", [only], version="v1"), Workflow("a", [only], version="z-old"),
         Workflow("b", [only], version="v3"), Workflow("b", [only], version="v2")]
    )  # fmt: skip
    record = registry_record("host:1", registry, 123)
    graphs = [w.pop("graphs") for w in record["workflows"]]
    assert record == {
        "worker_id": "host:1",
        "at": 123,
        "workflows": [
            {"name": "a", "versions": ["z-old"]},
            {"name": "b", "versions": ["v2", "v3", "v1"]},  # the last registered runs new starts
        ],
    }
    assert [sorted(g) for g in graphs] == [["z-old"], ["v1", "v2", "v3"]]
    assert graphs[1]["v3"] == registry.get("b", "v3").graph()  # type: ignore[union-attr]


def test_only_members_of_the_worker_group_count() -> None:
    group = GroupDescription("cerebelum-workers", "Stable", (
        Member("m1", "cerebelum-worker:h:1", "/127.0.0.1", (0, 1)),
        Member("m2", "cerebelum-worker:h:2", "/127.0.0.1", (2,)),
        Member("m3", "some-other-client", "/127.0.0.1", ()),
    ))  # fmt: skip
    live = live_worker_ids(group)
    assert live == ["h:1", "h:2"]
    records = {
        "h:1": published("h:1", 2, order=("v2", "v1")),
        "h:9": published("h:9", 3, gone=("v1",)),  # left the group: not counted
    }
    view = join_live(live, records)
    assert view.unpublished == ("h:2",) and not view.complete
    assert view.workflows == {"order": ("v2", "v1")}


def test_a_start_is_refused_only_when_every_live_worker_is_known() -> None:
    records = {"a": published("a", 1, w3=("v1",)), "b": published("b", 2, order=("v1",))}
    assert unknown_workflow("nope", join_live([], records)) is None  # no worker: it waits
    assert unknown_workflow("nope", join_live(["a", "c"], records)) is None  # c not known
    assert unknown_workflow("w3", join_live(["a", "b"], records)) is None
    refusal = unknown_workflow("nope", join_live(["a", "b"], records))
    assert refusal is not None and refusal.status == 409
    assert refusal.message == "no live worker runs workflow 'nope'"
    assert refusal.details == {"workflow": "nope", "workflows": ["order", "w3"]}


def test_a_workflow_that_cannot_be_described_is_published_without_its_graph() -> None:
    from tests import apps

    record = registry_record("host:1", Registry.from_namespace(vars(apps)), 123)
    graphs = {w["name"]: w["graphs"] for w in record["workflows"]}
    assert list(graphs["bug_at_start"].values()) == [None]  # its step raises when looked at
    assert all(g is not None for g in graphs["w3"].values())
