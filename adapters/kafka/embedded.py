"""The embedded broker: noida-db's Kafka-protocol server on a free loopback port, and topic set-up."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import (
    BrokerNotAvailableError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    TopicAlreadyExistsError,
)

from domain.log import TopicSpec

log = logging.getLogger(__name__)
T = TypeVar("T")


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (each socket is held until all are chosen, so no two are equal)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def process_alive(process: subprocess.Popen[bytes] | None, pid: int | None, marker: str | None = None) -> bool:
    """Whether a broker process runs: ours (a Popen, reaped when it ends) or one a previous command started,
    recognised by `marker` in its command line. A pid from a state file may belong to another process by
    now (a reboot, a container): without its marker it is not ours, and never signalled."""
    if process is not None:
        return process.poll() is None
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # a killed child not reaped yet is a zombie: it answers kill(0) but is gone
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    if marker is not None:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return marker in command
    return True


def _binary() -> str:
    path = files("noida_db").joinpath("noida-db")
    if not path.is_file():
        raise BrokerError(f"noida-db binary not found at {path}")
    os.chmod(str(path), 0o755)  # noqa: S103 - the wheel ships the broker binary without its exec bit
    return str(path)


def admin_client(bootstrap: str, **options: Any) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **options)


def reachable(bootstrap: str) -> str:
    """The addresses of `bootstrap` that accept a connection now (probed with sockets we close ourselves:
    a kafka-python client whose constructor fails on "connection refused" leaves its socket for the GC)."""
    live = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        with contextlib.suppress(OSError), socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            live.append(address.strip())
    return ",".join(live)


RETRIED = (KafkaConnectionError, NodeNotReadyError, KafkaTimeoutError, BrokerNotAvailableError)


def with_admin(bootstrap: str, question: Callable[[KafkaAdminClient], T], wait_s: float = 30.0, **options: Any) -> T:
    """Ask an admin client of the reachable brokers. A cluster with a node down is still answered: the
    client can pick the dead node (its metadata names it until its session times out), so a connection
    error is asked again, of the nodes that answer, for up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        admin: KafkaAdminClient | None = None
        try:
            admin = admin_client(reachable(bootstrap) or bootstrap, **options)
            return question(admin)
        except RETRIED:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
        finally:
            if admin is not None:
                admin.close()


def wait_ready(bootstrap: str, timeout: float = 30.0, **options: Any) -> None:
    """Block until a broker of `bootstrap` answers a metadata request."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        live = reachable(bootstrap)
        if not live:
            last = ConnectionRefusedError(f"no broker of {bootstrap} accepts a connection")
            time.sleep(0.1)
            continue
        try:
            admin = admin_client(live, **options)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as exc:
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout:.0f}s: {last}")


def min_insync_replicas(replication: int) -> int:
    """Acknowledged writes survive one broker's loss: two in-sync copies from three replicas up."""
    return 2 if replication >= 3 else 1


def ensure_topics(bootstrap: str, specs: list[TopicSpec], replication: int = 1, **options: Any) -> list[str]:
    """Create missing topics (with `replication` copies, min.insync.replicas=2 from three copies up); refuse
    to run on existing ones with another partition count."""
    return with_admin(bootstrap, lambda admin: _ensure_topics(admin, specs, replication), **options)


def _ensure_topics(admin: KafkaAdminClient, specs: list[TopicSpec], replication: int) -> list[str]:
    insync = {"min.insync.replicas": str(min_insync_replicas(replication))} if replication > 1 else {}
    existing = set(admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    if missing:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(
                [NewTopic(s.name, s.partitions, replication, topic_configs=s.configs() | insync) for s in missing]
            )
    described = _partition_counts(admin, specs, wait_for_leaders_s=30.0 if missing else 0.0)
    for spec in specs:
        if described.get(spec.name) != spec.partitions:
            raise BrokerError(
                f"topic {spec.name} has {described.get(spec.name)} partitions, the hub needs "
                f"{spec.partitions}: co-partitioned stages would mis-route keys"
            )
    for spec in specs:  # a topic from an earlier release: the broker must stamp submissions itself
        if spec.broker_time and _configs(admin, spec.name).get(TIMESTAMP_TYPE) != "LogAppendTime":
            _set_log_append_time(admin, spec)
    return [s.name for s in missing]


TIMESTAMP_TYPE = "message.timestamp.type"


def _partition_counts(admin: KafkaAdminClient, specs: list[TopicSpec], wait_for_leaders_s: float) -> dict[str, int]:
    """Each topic's partition count. Apache Kafka answers CreateTopics before its metadata shows the new
    topics and their leaders: after creating them, wait up to `wait_for_leaders_s` until every partition
    has a leader (a partition of an existing topic may be between leaders while a node is down: counted)."""
    deadline = time.monotonic() + wait_for_leaders_s
    while True:
        described = admin.describe_topics([s.name for s in specs])
        counts = {d.get("name", d.get("topic")): len(d["partitions"]) for d in described}
        led = all(p["leader_id"] >= 0 for d in described for p in d["partitions"])
        if (led and all(counts.get(s.name) == s.partitions for s in specs)) or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def _configs(admin: KafkaAdminClient, topic: str) -> dict[str, str]:
    found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    entries = found.get("topic", {}).get(topic, {}) if isinstance(found, dict) else {}
    return {name: entry["value"] for name, entry in entries.items()}


def _set_log_append_time(admin: KafkaAdminClient, spec: TopicSpec) -> None:
    configs = {TIMESTAMP_TYPE: "LogAppendTime"}
    try:
        found = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, spec.name, configs=configs)])
        outcome = found.get("topic", {}).get(spec.name) if isinstance(found, dict) else found
    except Exception as exc:
        outcome = exc
    if outcome == "OK":
        log.warning("topic %s set to LogAppendTime: envelope age is judged by broker time", spec.name)
    else:
        log.error(
            "could not set topic %s to LogAppendTime (%s): envelope age is judged by the workers' clock until "
            "it is set (kafka-configs.sh --alter --add-config message.timestamp.type=LogAppendTime)",
            spec.name,
            outcome,
        )


def broker_stamps(bootstrap: str, topic: str, **options: Any) -> bool:
    """Whether the broker stamps `topic`'s records as it appends them (LogAppendTime). A record's own
    timestamp-type bit is not proof: a producer sets it, and a broker may pass it through on a CreateTime
    topic (noida-db does)."""
    return with_admin(bootstrap, lambda admin: _configs(admin, topic).get(TIMESTAMP_TYPE) == "LogAppendTime", **options)


class EmbeddedBroker:
    """One noida-db process with its own data directory. State file: DATA_DIR/broker.json."""

    KIND = "noida"
    replication = 1

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "broker.json"

    @property
    def pids(self) -> list[int]:
        return [self.pid] if self.pid is not None else []

    @classmethod
    def find_running(cls, data_dir: Path) -> EmbeddedBroker | None:
        """The broker a previous command started in `data_dir`, if it is still alive."""
        state = data_dir / "broker.json"
        if not state.exists():
            return None
        info = json.loads(state.read_text())
        broker = cls(data_dir, info["port"])
        broker.pid = info["pid"]
        return broker if broker._alive() else None

    def start(self, timeout: float = 60.0) -> EmbeddedBroker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        log_file = open(self.data_dir / "broker.log", "ab")  # noqa: SIM115 - owned by the child
        self._process = subprocess.Popen(
            [
                _binary(),
                "start",
                "--only",
                "kafka",
                "--kafka-port",
                str(self.port),
                "--data-dir",
                str(self.data_dir / "noida"),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
        )
        log_file.close()
        self.pid = self._process.pid
        self.state_file.write_text(json.dumps({"pid": self.pid, "port": self.port}))
        try:
            wait_ready(self.bootstrap, timeout)
        except BrokerError:
            self.stop()
            raise
        return self

    def _alive(self) -> bool:
        return process_alive(self._process, self.pid, marker=str(self.data_dir / "noida"))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop cleanly (SIGINT, as Ctrl-C; it saves its data), SIGKILL if it does not go."""
        if self.pid is not None and self._alive():
            os.kill(self.pid, signal.SIGINT)
            deadline = time.monotonic() + timeout
            while self._alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._alive():
                log.warning("broker did not stop in %.0fs; killing it", timeout)
                os.kill(self.pid, signal.SIGKILL)
        if self._process is not None:
            self._process.wait(timeout=10)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def kill(self) -> None:
        """SIGKILL, for fault tests: no chance to save its last second of writes."""
        if self.pid is not None and self._alive():
            os.kill(self.pid, signal.SIGKILL)
            if self._process is not None:
                self._process.wait(timeout=10)
