"""Namespaces: every wire name derived from one, validated at the edge, and the wire check."""

from __future__ import annotations

import orjson
import pytest

from cerebelum.admin.topics import load_declarations, partition_count_problems
from cerebelum.cli.main import build_parser
from cerebelum.config import Settings, schema_url
from cerebelum.constants import DEFAULT_NAMES, DEFAULT_NAMESPACE, names, namespace_problem
from cerebelum.core.commands import (
    StartExecution,
    cancel_command,
    complete_command,
    parse_command,
    signal_command,
    start_command,
)
from cerebelum.errors import ConfigurationError, InvalidCommand


def test_the_default_namespace_keeps_the_names_clusters_already_have() -> None:
    n = names(DEFAULT_NAMESPACE)
    assert n is DEFAULT_NAMES and n.is_default
    assert n.topics == (
        "cerebelum.commands",
        "cerebelum.events",
        "cerebelum.state",
        "cerebelum.dlq",
        "cerebelum.workflows",
    )
    assert (n.worker_group, n.mirror_group) == ("cerebelum-workers", "cerebelum-mirror")
    assert n.worker_client_id("h:1") == "cerebelum-worker:h:1"
    assert n.worker_transactional_id("h:1") == "cerebelum-worker-h:1"
    assert n.schema is None  # the tables stay where the connection always put them
    assert n.mirrored_channel == "cerebelum_mirrored"
    assert Settings().names is n
    assert Settings().namespace_database_url == Settings().database_url


def test_a_namespace_has_every_name_under_one_prefix_of_its_own() -> None:
    n = names("team-a")
    assert n.topics == (
        "cerebelum.team-a.commands",
        "cerebelum.team-a.events",
        "cerebelum.team-a.state",
        "cerebelum.team-a.dlq",
        "cerebelum.team-a.workflows",
    )
    assert (n.worker_group, n.mirror_group) == (
        "cerebelum.team-a.workers",
        "cerebelum.team-a.mirror",
    )
    assert n.worker_client_id("h:1") == "cerebelum.team-a.worker:h:1"
    assert n.worker_transactional_id("h:1") == "cerebelum.team-a.worker-h:1"
    assert (n.schema, n.mirrored_channel) == ("cerebelum_team_a", "cerebelum_mirrored_team_a")
    # One prefixed ACL covers the namespace: every topic, group and transactional id.
    kafka_names = [*n.topics, n.worker_group, n.mirror_group, n.worker_transactional_id("x")]
    assert all(name.startswith(n.acl_prefix) for name in kafka_names)
    # ... and no other namespace: "team" is not a prefix of "team-a"'s names.
    assert not any(name.startswith(names("team").acl_prefix) for name in kafka_names)
    # Nothing shared with the default namespace either.
    assert not set(kafka_names) & {*DEFAULT_NAMES.topics, DEFAULT_NAMES.worker_group}


def test_topic_maps_the_declared_names_to_the_namespace() -> None:
    n = names("b")
    assert n.topic("cerebelum.commands") == "cerebelum.b.commands"
    assert n.topic("someone.elses") == "someone.elses"
    declared = load_declarations(names=n)
    assert [s.name for s in declared] == [
        "cerebelum.b.commands",
        "cerebelum.b.events",
        "cerebelum.b.state",
        "cerebelum.b.workflows",
        "cerebelum.b.dlq",
    ]
    # The partition checks use the namespace's names.
    assert partition_count_problems({"cerebelum.b.commands": 64}, names=n) == []
    (problem,) = partition_count_problems({"cerebelum.b.commands": 8}, names=n)
    assert "cerebelum.b.commands has 8 partitions" in problem
    assert partition_count_problems({"cerebelum.commands": 8}, names=n) == []


@pytest.mark.parametrize("bad", ["", "A", "team_a", "-a", "a.b", "a b", "é", "x" * 41, "default\n"])
def test_a_namespace_name_is_checked_with_a_clear_error(bad: str) -> None:
    problem = namespace_problem(bad)
    assert problem is not None and "lowercase letters, digits and '-'" in problem
    with pytest.raises(ValueError):
        names(bad)
    with pytest.raises(ConfigurationError, match="CEREBELUM_NAMESPACE / --namespace"):
        Settings(namespace=bad)


@pytest.mark.parametrize("good", ["a", "0", "team-a", "a-", "x" * 40])
def test_good_namespace_names(good: str) -> None:
    assert namespace_problem(good) is None
    assert Settings(namespace=good).names.namespace == good


def test_settings_read_the_namespace_from_the_environment() -> None:
    assert Settings.from_env({}).namespace == DEFAULT_NAMESPACE
    assert Settings.from_env({"CEREBELUM_NAMESPACE": ""}).namespace == DEFAULT_NAMESPACE
    assert Settings.from_env({"CEREBELUM_NAMESPACE": "orders"}).namespace == "orders"
    with pytest.raises(ConfigurationError):
        Settings.from_env({"CEREBELUM_NAMESPACE": "Orders"})


def test_a_namespace_binds_every_connection_to_its_schema() -> None:
    url = "postgresql://u@db:5432/c?sslmode=require&search_path=public"
    assert schema_url(url, None) == url
    bound = Settings(namespace="orders", database_url=url).namespace_database_url
    assert bound == "postgresql://u@db:5432/c?sslmode=require&search_path=cerebelum_orders"


def test_the_cli_takes_a_global_namespace_option() -> None:
    args = build_parser().parse_args(["--namespace", "orders", "topics", "apply"])
    assert args.namespace == "orders"
    assert build_parser().parse_args(["topics", "apply"]).namespace is None


def test_our_encoders_name_the_namespace_when_given() -> None:
    encoded = [
        start_command("e1", "wf", {}, namespace="a"),
        signal_command("e1", "go", None, "a"),
        cancel_command("e1", "stop", "a"),
        complete_command("e1", "s", 1, 5, None, "a"),
    ]
    assert all(orjson.loads(v)["namespace"] == "a" for v in encoded)
    assert "namespace" not in orjson.loads(start_command("e1", "wf", {}))


def test_a_command_naming_another_namespace_is_refused() -> None:
    value = start_command("e1", "wf", {}, namespace="b")
    with pytest.raises(
        InvalidCommand, match="names namespace 'b', but it was read from namespace 'a'"
    ):
        parse_command(value, "a")
    assert isinstance(parse_command(value, "b"), StartExecution)
    assert isinstance(parse_command(value), StartExecution)  # no reader namespace: no check


def test_a_command_without_the_field_is_the_topics() -> None:
    # External producers that predate namespaces keep working, in any namespace.
    value = start_command("e1", "wf", {})
    assert isinstance(parse_command(value, "a"), StartExecution)
    assert isinstance(parse_command(value, DEFAULT_NAMESPACE), StartExecution)


def test_the_cli_refuses_a_bad_namespace_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cerebelum.cli.main import main

    monkeypatch.delenv("CEREBELUM_NAMESPACE", raising=False)  # main() sets it: undone after

    assert main(["--namespace", "Team_A", "topics", "apply"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CEREBELUM_NAMESPACE / --namespace: namespace must be") and (
        err.count("\n") == 1
    )
