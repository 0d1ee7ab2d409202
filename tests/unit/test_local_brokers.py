"""The local brokers' bookkeeping: what a state file may make the launcher signal, and what it refuses."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest

from adapters.kafka.apache_kafka import KAFKA_VERSION, KafkaCluster
from adapters.kafka.embedded import BrokerError, EmbeddedBroker, process_alive


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process that is not a broker, whose pid a stale state file could name (pids are reused)."""
    process = subprocess.Popen(["sleep", "60"])
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"sleep" not in cmdline.read_bytes():  # forked, not exec'd yet: its command line is still ours
        assert time.monotonic() < deadline, "sleep never started"
        time.sleep(0.01)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_stale_state_file_naming_another_process_finds_no_broker_and_stops_nothing(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    kafka_dir = tmp_path / "kafka"
    kafka_dir.mkdir()
    node = {"id": 1, "port": 1, "controller_port": 2, "pid": stranger.pid}
    state = {"kind": "kafka", "version": KAFKA_VERSION, "brokers": 1, "cache": str(tmp_path), "nodes": [node]}
    (kafka_dir / "cluster.json").write_text(json.dumps(state))
    assert KafkaCluster.find_running(kafka_dir) is None
    noida_dir = tmp_path / "broker"
    noida_dir.mkdir()
    (noida_dir / "broker.json").write_text(json.dumps({"pid": stranger.pid, "port": 1}))
    assert EmbeddedBroker.find_running(noida_dir) is None
    assert stranger.poll() is None, "the stranger still runs"
    # the same pid with its own marker in its command line is recognised
    assert process_alive(None, stranger.pid, marker="sleep 60")
    assert not process_alive(None, stranger.pid, marker=str(kafka_dir))


def test_a_data_directory_formatted_for_one_node_refuses_three(tmp_path: Path) -> None:
    (tmp_path / "layout.json").write_text(json.dumps({"brokers": 1, "cluster_id": "AAAAAAAAAAAAAAAAAAAAAA"}))
    with pytest.raises(BrokerError, match="holds a 1-node Apache Kafka; start it with --brokers 1"):
        KafkaCluster(tmp_path, 3)._layout()
    assert KafkaCluster(tmp_path, 1)._layout() == "AAAAAAAAAAAAAAAAAAAAAA"  # the same cluster again


def test_the_pom_pins_the_release_the_launcher_names() -> None:
    pom = files("tiphub").joinpath("kafka-pom.xml").read_text()
    assert re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1) == KAFKA_VERSION  # type: ignore[union-attr]


def test_only_one_or_three_nodes() -> None:
    with pytest.raises(BrokerError, match="--brokers must be 1 or 3"):
        KafkaCluster(Path("unused"), 2)


def test_a_kraft_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """`kafka-storage format -t ID` reads an id starting with "-" as an option: one Apache Kafka start in
    64 failed so. Such ids are drawn again, as Kafka's own Uuid.randomUuid does."""
    import uuid as uuid_module

    from adapters.kafka import apache_kafka

    dashed = uuid_module.UUID(bytes=b"\xfb" + b"\x00" * 15)  # base64url "-w..."
    drawn = iter([dashed, uuid_module.UUID(int=1)])
    monkeypatch.setattr(apache_kafka.uuid, "uuid4", lambda: next(drawn))
    found = apache_kafka.cluster_id()
    assert not found.startswith("-") and found == "AAAAAAAAAAAAAAAAAAAAAQ"
