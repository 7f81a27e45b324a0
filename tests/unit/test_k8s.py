"""deploy/k8s/, checked offline: every manifest against the Kubernetes API's schemas (strict: an
unknown field is an error), as bundled by the kubernetes-validate package, and the wiring between
them that no schema sees (selectors, probe ports, Secret keys, settings the code reads)."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cerebelum.admin.topics import load_declarations

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes still in wide support and the newest the package knows.
VERSIONS = ("1.30.0", "1.37.0")
IMAGE_USER = 10001  # the Dockerfile's USER


@functools.cache
def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return loaded


@functools.cache
def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file, document) of every resource the kustomization lists, in order (read once: a
    test that changes one works on a copy)."""
    docs = []
    for name in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                docs.append((name, doc))
    return docs


def resource(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return [d for _, d in manifests() if d["kind"] in ("StatefulSet", "Deployment", "Job")]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    only: dict[str, Any] = containers[0]
    return only


def config() -> dict[str, str]:
    data: dict[str, str] = resource("ConfigMap", "cerebelum-config")["data"]
    return data


def env_of(workload: dict[str, Any]) -> dict[str, Any]:
    """Every variable the container gets: the ConfigMap's, then its own (value or source)."""
    env: dict[str, Any] = {}
    for source in container(workload).get("envFrom", []):
        env.update(resource("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container(workload).get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_follows_the_kubernetes_schemas(version: str) -> None:
    problems = []
    for name, doc in manifests():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert problems == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["spec"].__setitem__("replicas", "three"),
        lambda d: d["spec"]["template"]["spec"].__setitem__("terminationGracePeriod", 40),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"].__setitem__(
            "httpGet", {"path": "/healthz"}
        ),
    ],
    ids=["wrong-type", "unknown-field", "missing-port"],
)
def test_the_schema_check_catches_a_broken_manifest(breakage: Any) -> None:
    doc = copy.deepcopy(resource("StatefulSet", "cerebelum-worker"))
    breakage(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    namespace = kustomization()["namespace"]
    for name, doc in manifests():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, name
    assert {i["name"] for i in kustomization()["images"]} == {
        container(w)["image"] for w in workloads()
    }


def test_workers_are_a_statefulset_with_the_pod_name_as_instance_id() -> None:
    workers = resource("StatefulSet", "cerebelum-worker")
    assert container(workers)["args"][0] == "worker"
    assert env_of(workers)["CEREBELUM_GROUP_INSTANCE_ID"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    service = resource("Service", workers["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    # Leaving the group needs the shutdown grace, a commit and a LeaveGroup: more time than
    # CEREBELUM_SHUTDOWN_GRACE_S before the kubelet's SIGKILL.
    grace = float(config()["CEREBELUM_SHUTDOWN_GRACE_S"])
    assert pod_spec(workers)["terminationGracePeriodSeconds"] >= grace + 20


def test_the_disruption_budget_covers_the_workers() -> None:
    budget = resource("PodDisruptionBudget", "cerebelum-worker")
    workers = resource("StatefulSet", "cerebelum-worker")
    labels = workers["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize(
    ("kind", "name", "port_setting"),
    [
        ("StatefulSet", "cerebelum-worker", "CEREBELUM_WORKER_HTTP_PORT"),
        ("Deployment", "cerebelum-mirror", "CEREBELUM_MIRROR_HTTP_PORT"),
    ],
)
def test_worker_and_mirror_probes_ask_their_own_endpoints(
    kind: str, name: str, port_setting: str
) -> None:
    workload = resource(kind, name)
    box = container(workload)
    ports = {p["name"]: p["containerPort"] for p in box["ports"]}
    assert str(ports["ops"]) == env_of(workload)[port_setting]
    assert env_of(workload)["CEREBELUM_HTTP_HOST"] == "0.0.0.0"  # the kubelet comes from outside
    assert box["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert box["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert box["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}


def test_the_api_probe_names_an_allowed_host_and_the_service_reaches_it() -> None:
    api = resource("Deployment", "cerebelum-api")
    box = container(api)
    probe = box["readinessProbe"]["httpGet"]
    assert probe["path"] == "/readyz"
    (host,) = [h["value"] for h in probe["httpHeaders"] if h["name"] == "Host"]
    allowed = config()["CEREBELUM_API_ALLOWED_HOSTS"].split(",")
    assert host in allowed
    service = resource("Service", "cerebelum-api")
    assert service["metadata"]["name"] in allowed
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in box["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    assert str(ports["http"]) == box["args"][box["args"].index("--port") + 1]
    # Liveness must not follow Kafka's or PostgreSQL's health (the API reconnects by itself).
    assert "tcpSocket" in box["livenessProbe"]


def test_the_api_reads_its_tokens_from_the_secret() -> None:
    api = resource("Deployment", "cerebelum-api")
    tokens_file = Path(env_of(api)["CEREBELUM_API_TOKENS_FILE"])
    assert "CEREBELUM_API_AUTH" not in env_of(api)
    mounts = {m["mountPath"]: m for m in container(api)["volumeMounts"]}
    mount = mounts[str(tokens_file.parent)]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in pod_spec(api)["volumes"]}
    secret = volumes[mount["name"]]["secret"]
    assert {"key": "api-tokens", "path": tokens_file.name} in secret["items"]
    assert secret["secretName"] == "cerebelum-credentials"


def test_every_referenced_config_and_secret_exists() -> None:
    secret = resource("Secret", "cerebelum-credentials")
    keys = set(secret["stringData"])
    for workload in workloads():
        box = container(workload)
        for source in box.get("envFrom", []):
            resource("ConfigMap", source["configMapRef"]["name"])
        for item in box.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "cerebelum-credentials"
                assert ref["key"] in keys, f"{workload['metadata']['name']}: {ref['key']}"
        for volume in pod_spec(workload).get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] == "cerebelum-credentials"
                assert {i["key"] for i in volume["secret"]["items"]} <= keys
            if "configMap" in volume:
                assert volume["configMap"]["name"] in generated_config_maps()


def generated_config_maps() -> dict[str, list[str]]:
    """name -> files of the kustomization's configMapGenerator."""
    return {g["name"]: g["files"] for g in kustomization().get("configMapGenerator", [])}


def test_every_setting_in_the_config_map_is_one_the_code_reads() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "cerebelum").rglob("*.py"))
    for key in config():
        assert re.search(rf'"{key}"', source), f"{key}: no such setting in cerebelum/"


def test_every_container_is_sized_and_unprivileged() -> None:
    for workload in workloads():
        name = workload["metadata"]["name"]
        resources = container(workload)["resources"]
        for bound in ("requests", "limits"):
            assert set(resources[bound]) == {"cpu", "memory"}, f"{name} {bound}"
        pod = pod_spec(workload)["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == IMAGE_USER, name
        box = container(workload)["securityContext"]
        assert box["allowPrivilegeEscalation"] is False, name
        assert box["capabilities"]["drop"] == ["ALL"], name
        assert pod_spec(workload)["automountServiceAccountToken"] is False, name


def test_the_init_job_creates_topics_and_tables() -> None:
    job = resource("Job", "cerebelum-init")
    script = container(job)["command"][-1]
    mounts = {m["name"]: m["mountPath"] for m in container(job)["volumeMounts"]}
    assert f"cerebelum topics apply --file {mounts['topics']}/topics.json" in script
    assert "cerebelum db migrate" in script
    assert generated_config_maps()["cerebelum-topics"] == ["topics.json"]
    assert pod_spec(job)["restartPolicy"] == "OnFailure"


def test_production_topics_are_the_declared_ones_replicated() -> None:
    # `topics apply` sets an existing topic's configs to the declared ones, so the durable
    # settings must be in the file it applies: three replicas, two in sync for a write.
    declared = load_declarations(ROOT / "topics" / "topics.json")
    production = load_declarations(K8S / "topics.json")
    assert [(t.name, t.partitions) for t in production] == [
        (t.name, t.partitions) for t in declared
    ]
    for mine, theirs in zip(production, declared, strict=True):
        assert mine.replication_factor == 3
        assert mine.configs == {**theirs.configs, "min.insync.replicas": "2"}
