"""The Docker deployment files, checked without a Docker engine.

docker-compose.yml: valid against the Compose Specification's JSON schema (vendored in
tests/unit/schemas/), its broker configured as `cerebelum dev up`'s, and the rules an operator
expects: every long-running service health-checked, the image built once and reused, nothing
published beyond the loopback, data on named volumes, the API behind a tokens file.
Dockerfile: multi-stage, a hash-locked install of the wheel, a non-root user; every file it
copies exists and is not excluded by .dockerignore.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cerebelum.dev.kafka import CLUSTER_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
APP_DOCKERFILE = ROOT / "examples" / "Dockerfile.app"
COMPOSE_SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
IMAGE = "cerebelum:local"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}: as Compose interpolates them
# when NAME is unset (an error form yields "", the file is then refused by Compose itself).
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _default(match: re.Match[str]) -> str:
    operator, default = match.group(2) or "", match.group(3) or ""
    return "" if "?" in operator else default


def interpolate(value: Any) -> Any:
    """`value` with every ${...} replaced by its default (the environment left empty)."""
    if isinstance(value, str):
        return INTERPOLATION.sub(_default, value)
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    return value


def load_compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def one_shots(services: dict[str, Any]) -> set[str]:
    """Services others wait to see finish: they run once and exit, so have no health."""
    return {
        name
        for service in services.values()
        for name, condition in (service.get("depends_on") or {}).items()
        if isinstance(condition, dict)
        and condition.get("condition") == "service_completed_successfully"
    }


def healthcheck_command(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return list(test)


# -- the broker -------------------------------------------------------------------------------


def test_the_compose_broker_behaves_like_the_dev_broker(compose: dict[str, Any]) -> None:
    env = {
        name[len("KAFKA_") :].lower().replace("_", "."): value
        for name, value in environment(compose["services"]["kafka"]).items()
        if name.startswith("KAFKA_")
    }
    assert {key: env.get(key) for key in CLUSTER_SETTINGS} == CLUSTER_SETTINGS


# -- the schema -------------------------------------------------------------------------------


def test_the_compose_file_follows_the_compose_specification(
    schema_validator: jsonschema.protocols.Validator,
) -> None:
    raw = yaml.safe_load(COMPOSE.read_text())  # before interpolation, as Compose reads it
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in schema_validator.iter_errors(raw)
    ]
    assert errors == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["services"]["api"].__setitem__("ports", [{"published": "x", "tagret": 8080}]),
        lambda c: c["services"]["kafka"].__setitem__("healthcheck", {"tset": ["CMD", "true"]}),
        lambda c: c["services"]["mirror"].__setitem__("depends_on", {"init": {"cond": "x"}}),
        lambda c: c.__setitem__("volume", {}),
    ],
    ids=["port-typo", "healthcheck-typo", "depends-on-typo", "top-level-typo"],
)
def test_the_schema_check_catches_a_broken_compose_file(
    schema_validator: jsonschema.protocols.Validator, breakage: Any
) -> None:
    broken = yaml.safe_load(COMPOSE.read_text())
    breakage(broken)
    assert list(schema_validator.iter_errors(broken))


# -- what an operator expects -------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    once = one_shots(services)
    assert once == {"init"}
    for name, service in services.items():
        if name in once:
            assert "restart" not in service, f"{name} runs once: restarting it loops"
            assert service["healthcheck"] == {"disable": True}, name
            continue
        assert healthcheck_command(service)[0] in ("CMD", "CMD-SHELL"), name
        assert service.get("restart") == "unless-stopped", name


def test_health_checks_ask_the_ports_the_processes_serve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        command = service.get("command") or []
        if not command or command[0] not in ("worker", "mirror", "api"):
            continue
        env = environment(service)
        port = {
            "worker": env.get("CEREBELUM_WORKER_HTTP_PORT"),
            "mirror": env.get("CEREBELUM_MIRROR_HTTP_PORT"),
            "api": command[command.index("--port") + 1] if "--port" in command else "8080",
        }[command[0]]
        assert port, f"{name} serves no health endpoint"
        if command[0] != "api":
            assert env.get("CEREBELUM_HTTP_HOST") == "0.0.0.0", name  # reachable by scrapers
        assert healthcheck_command(service) == [
            "CMD", "cerebelum-healthcheck", f"http://127.0.0.1:{port}/readyz"
        ], name  # fmt: skip


def test_the_image_is_built_once_and_reused(compose: dict[str, Any]) -> None:
    services = compose["services"]
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["init"]
    assert services["init"]["image"] == IMAGE
    users = [name for name, service in services.items() if service.get("image") == IMAGE]
    assert set(users) >= {"init", "worker-1", "worker-2", "worker-3", "mirror", "api"}
    for name in users:
        if name == "init":
            continue
        service = services[name]
        # Never pulled (the image exists only here), and started after the build's service.
        assert service.get("pull_policy") == "never", name
        assert service["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_nothing_is_published_beyond_the_loopback(compose: dict[str, Any]) -> None:
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", name
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
    assert published == 1  # the API only; Kafka and PostgreSQL stay on the compose network


def test_data_lives_on_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    mounts: dict[str, set[str]] = {}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            assert source in declared, f"{name}: {volume} is not a named volume"
            mounts.setdefault(source, set()).add(f"{name}:{target}")
    assert "kafka:/var/lib/kafka/data" in mounts["kafka-data"]
    assert environment(compose["services"]["kafka"])["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert "postgres:/var/lib/postgresql/data" in mounts["postgres-data"]
    assert set(mounts) == declared  # no volume declared and unused


def test_the_api_reads_the_tokens_init_makes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api_env = environment(services["api"])
    assert "CEREBELUM_API_AUTH" not in api_env  # authentication on, as everywhere
    tokens_file = api_env["CEREBELUM_API_TOKENS_FILE"]
    folder = str(Path(tokens_file).parent)
    assert f"api-tokens:{folder}:ro" in services["api"]["volumes"]  # the API only reads it
    assert f"api-tokens:{folder}" in services["init"]["volumes"]
    script = services["init"]["command"][0]
    assert f"--file {tokens_file}" in script
    assert f"if [ ! -s {tokens_file} ]" in script  # once: a restart keeps the tokens
    assert "umask 077" in script  # the plain token is readable by its owner only


def test_secrets_are_not_written_in_the_file() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    postgres = environment(raw["services"]["postgres"])
    assert postgres["POSTGRES_PASSWORD"].startswith("${CEREBELUM_POSTGRES_PASSWORD")
    url = environment(raw["services"]["init"])["CEREBELUM_DATABASE_URL"]
    assert ":${CEREBELUM_POSTGRES_PASSWORD" in url


def test_workers_are_static_members_with_distinct_ids(compose: dict[str, Any]) -> None:
    ids = [
        environment(service).get("CEREBELUM_GROUP_INSTANCE_ID")
        for service in compose["services"].values()
        if (service.get("command") or [None])[0] == "worker"
    ]
    assert len(ids) == 3
    assert None not in ids and len(set(ids)) == len(ids)


def test_workers_get_time_to_leave_the_group(compose: dict[str, Any]) -> None:
    # SIGTERM waits up to CEREBELUM_SHUTDOWN_GRACE_S (10 s) for steps, then commits and leaves.
    for service in compose["services"].values():
        if (service.get("command") or [None])[0] == "worker":
            assert service["stop_grace_period"] == "30s"


# -- the Dockerfiles ----------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(path, pattern.lstrip("*/"))
        or path.startswith(pattern.rstrip("/") + "/")
        or path == pattern
        for pattern in patterns
    )


def test_the_dockerfile_builds_a_wheel_and_installs_it_locked() -> None:
    steps = instructions(DOCKERFILE)
    stages = [args for word, args in steps if word == "FROM"]
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "pip wheel" in runs and "--no-deps" in runs
    assert "--require-hashes" in runs and "-r /tmp/requirements.lock" in runs
    assert re.search(r"pip install --no-deps /tmp/dist/cerebelum-\*\.whl", runs)
    assert "-e " not in runs and "--editable" not in runs
    final = steps[[i for i, (word, _) in enumerate(steps) if word == "FROM"][1] :]
    copies = [args for word, args in final if word == "COPY"]
    assert not any(" cerebelum " in f" {c} " for c in copies)  # the sources stay in stage 1


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    steps = instructions(DOCKERFILE)
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] == "10001:10001"
    last_user = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    assert all(word != "RUN" for word, _ in steps[last_user:])
    assert [args for word, args in steps if word == "HEALTHCHECK"]


def test_everything_the_dockerfiles_copy_is_in_the_build_context() -> None:
    patterns = dockerignore()
    assert {".venv", ".dev", ".cache", ".git"} <= set(patterns)
    for dockerfile in (DOCKERFILE,):
        for word, args in instructions(dockerfile):
            if word != "COPY" or "--from=" in args:
                continue
            parts = [part for part in shlex.split(args) if not part.startswith("--")]
            for source in parts[:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}"
                assert not ignored(source, patterns), f"{source} is in .dockerignore"


def test_the_app_dockerfile_builds_on_the_image() -> None:
    steps = instructions(APP_DOCKERFILE)
    assert steps[0][0] == "ARG" or steps[0][0] == "FROM"
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) == 1 and "CEREBELUM_IMAGE" in froms[0]
    users = [args for word, args in steps if word == "USER"]
    assert users[-1] == "10001:10001"  # back to the image's user after installing
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "pip install" in runs and "pip check" in runs
