"""The three-node dev cluster's configuration and the replicated topic declarations (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cerebelum.admin.topics import TopicMismatch, TopicSpec, replicated
from cerebelum.dev import cluster, kafka


def properties(layout: kafka.KafkaLayout) -> dict[str, str]:
    lines = kafka._server_properties(layout).splitlines()
    return dict(line.split("=", 1) for line in lines if not line.startswith("#"))


def test_three_nodes_share_the_quorum_and_replicate_the_internal_topics(tmp_path: Path) -> None:
    nodes = cluster.Cluster.on_ports(tmp_path, tmp_path / "state", 40000).nodes
    props = [properties(node) for node in nodes]
    voters = "1@127.0.0.1:40003,2@127.0.0.1:40004,3@127.0.0.1:40005"
    assert [p["controller.quorum.voters"] for p in props] == [voters] * 3
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert [p["listeners"].split(",")[0] for p in props] == [
        f"PLAINTEXT://127.0.0.1:{port}" for port in (40000, 40001, 40002)
    ]
    assert len({p["log.dirs"] for p in props}) == 3
    for p in props:
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"
        assert p["min.insync.replicas"] == "2"
    assert cluster.Cluster.on_ports(tmp_path, tmp_path, 40000).bootstrap == (
        "127.0.0.1:40000,127.0.0.1:40001,127.0.0.1:40002"
    )


def test_a_single_broker_keeps_replication_factor_one(tmp_path: Path) -> None:
    props = properties(kafka.KafkaLayout(tmp_path, port=40000, controller_port=40001))
    assert props["controller.quorum.voters"] == "1@127.0.0.1:40001"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert "min.insync.replicas" not in props


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {kafka.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_replication_factor_three_brings_min_insync_two() -> None:
    specs = [TopicSpec("t", 4, 1, {"min.insync.replicas": "1", "retention.ms": "5"})]
    (spec,) = replicated(specs, 3)
    assert spec.replication_factor == 3
    assert spec.configs == {"min.insync.replicas": "2", "retention.ms": "5"}
    assert replicated(specs, 1)[0].configs["min.insync.replicas"] == "1"
    assert replicated(specs, 2)[0].configs["min.insync.replicas"] == "1"
    assert replicated(specs, 5, 3)[0].configs["min.insync.replicas"] == "3"
    with pytest.raises(TopicMismatch):
        replicated(specs, 3, 4)
    with pytest.raises(TopicMismatch):
        replicated(specs, 0)
