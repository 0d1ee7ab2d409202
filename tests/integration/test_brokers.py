"""The brokers the hub runs on: each says what it is, and the launcher starts and stops Apache Kafka
from the command line as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapters.kafka.apache_kafka import KafkaCluster
from adapters.kafka.broker_quirks import detect_kind
from adapters.kafka.embedded import admin_client
from tests.harness import KAFKA_CACHE, broker_kind

pytestmark = pytest.mark.integration


@pytest.mark.noida
def test_the_session_broker_is_recognised_as_its_kind(broker: str) -> None:
    if broker_kind() not in ("kafka", "noida"):
        pytest.skip(f"TIPHUB_TEST_BROKER={broker_kind()}: a broker of unknown kind")
    assert detect_kind(broker) == broker_kind()


def tiphub(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiphub", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.skipif(broker_kind() != "kafka", reason="starts Apache Kafka: the kafka suite's")
def test_tiphub_broker_start_and_stop_a_local_apache_kafka_with_the_hubs_topics(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"TIPHUB_HOME": str(home), "PATH": "/usr/bin:/bin", "TIPHUB_BROKER_KIND": "kafka"}
    home.mkdir()
    # the launcher's classpath is resolved once per cache: reuse the suite's, as a second start would
    listing = next(KAFKA_CACHE.glob("kafka-*.classpath"), None)
    if listing is not None:
        (home / listing.name).write_text(listing.read_text())
    started = tiphub(env, "broker", "start", timeout=240)
    assert started.returncode == 0, started.stderr
    bootstrap = started.stdout.strip()
    try:
        running = KafkaCluster.find_running(home / "kafka")
        assert running is not None and running.bootstrap == bootstrap
        assert detect_kind(bootstrap) == "kafka"
        admin = admin_client(bootstrap)
        try:
            topics = set(admin.list_topics())
        finally:
            admin.close()
        assert {"tip.reports.submitted", "tip.reports.accepted", "tip.audit"} <= topics
        again = tiphub(env, "broker", "start", "--kind", "noida")
        assert again.returncode == 1 and "already runs" in again.stderr
    finally:
        stopped = tiphub(env, "broker", "stop")
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped", stopped.stderr
    assert KafkaCluster.find_running(home / "kafka") is None
    assert not (home / "kafka" / "cluster.json").exists()


def test_without_java_the_launcher_names_the_command_that_installs_it(tmp_path: Path) -> None:
    env = {"TIPHUB_HOME": str(tmp_path), "PATH": str(tmp_path / "empty")}
    done = tiphub(env, "broker", "start", "--kind", "kafka")
    said = " ".join(done.stderr.split())  # the console wraps long lines
    assert done.returncode == 1
    assert "Java 17" in said and "apt-get install -y openjdk-17-jre-headless" in said
