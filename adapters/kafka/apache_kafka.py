"""Apache Kafka on this machine, no Docker: a pinned release's jars from Maven Central, KRaft nodes on
loopback. One node (broker and controller in one process) or a cluster of three such nodes, each with its
own data directory, ports and a small heap. `tiphub broker start --kind kafka [--brokers 3]` and the test
suite start it; a cluster's description (pids, ports) is written to DATA_DIR/cluster.json so later
commands and `tiphub broker stop` find it.

The pom that pins the release is tiphub/kafka-pom.xml. Maven fetches the jars once into the user's Maven
repository (~/.m2); the classpath it resolves is kept under the cache directory (TIPHUB_HOME by default),
so a later start runs no Maven at all.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from adapters.kafka.embedded import BrokerError, admin_client, free_ports, process_alive, wait_ready

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"  # the release tiphub/kafka-pom.xml pins
JAVA_MIN = 17
INSTALL_JAVA = "apt-get install -y openjdk-17-jre-headless"
INSTALL_MAVEN = "apt-get install -y maven"
HEAP = "-Xmx512m"
MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


def java_major(java: str = "java") -> int | None:
    """The major version of `java`, or None when there is none."""
    if shutil.which(java) is None:
        return None
    done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def require_java() -> str:
    major = java_major()
    if major is None:
        raise BrokerError(f"Apache Kafka needs Java {JAVA_MIN} or newer and there is no `java`: {INSTALL_JAVA}")
    if major < JAVA_MIN:
        raise BrokerError(f"Apache Kafka {KAFKA_VERSION} needs Java {JAVA_MIN} or newer, found {major}: {INSTALL_JAVA}")
    return "java"


def classpath(cache: Path, progress: Callable[[str], None] = log.info) -> list[Path]:
    """The jars of the pinned release, fetched by Maven on first use and listed in a file under `cache`
    (named by the release and the pom's hash, so an edited pom is resolved again). A listed jar that went
    missing (a cleaned ~/.m2) is fetched again."""
    cache = cache.resolve()  # Maven resolves a relative output file against the pom's directory
    pom_text = files("tiphub").joinpath("kafka-pom.xml").read_bytes()
    listing = cache / f"kafka-{KAFKA_VERSION}-{hashlib.sha256(pom_text).hexdigest()[:12]}.classpath"
    jars = _listed(listing)
    if jars:
        return jars
    if shutil.which("mvn") is None:
        raise BrokerError(f"fetching Apache Kafka {KAFKA_VERSION} needs Maven and there is no `mvn`: {INSTALL_MAVEN}")
    cache.mkdir(parents=True, exist_ok=True)
    progress(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central (once; kept in ~/.m2 and {listing})")
    partial = listing.with_suffix(f".{os.getpid()}.partial")  # two processes may fetch at once
    with as_file(files("tiphub").joinpath("kafka-pom.xml")) as pom:
        try:
            done = subprocess.run(
                [
                    "mvn",
                    "-B",
                    "-q",
                    "-f",
                    str(pom),
                    "dependency:build-classpath",
                    "-Dmdep.includeScope=runtime",
                    f"-Dmdep.outputFile={partial}",
                ],
                capture_output=True,
                text=True,
                timeout=1800,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"mvn did not fetch Apache Kafka {KAFKA_VERSION} within 30 minutes") from exc
    if done.returncode != 0 or not partial.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise BrokerError(f"mvn could not fetch Apache Kafka {KAFKA_VERSION}: " + " | ".join(tail))
    partial.replace(listing)
    jars = _listed(listing)
    if not jars:
        raise BrokerError(f"mvn listed jars of Apache Kafka {KAFKA_VERSION} that are not there: {listing}")
    return jars


def _listed(listing: Path) -> list[Path]:
    """The jars a classpath file lists, if every one of them is there; else nothing."""
    if not listing.exists():
        return []
    jars = [Path(p) for p in listing.read_text().strip().split(os.pathsep) if p]
    return jars if jars and all(jar.is_file() for jar in jars) else []


def replication_settings(brokers: int) -> dict[str, str]:
    """The broker settings that decide durability and fail-over: the same in the tests' clusters and in
    deploy/ (tests/unit/test_deploy.py holds compose to the three-node values)."""
    replicas, insync = str(brokers), str(2 if brokers >= 3 else 1)
    return {
        "default.replication.factor": replicas,
        "min.insync.replicas": insync,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "12",  # fewer than 50: faster start and fail-over on a small machine
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": insync,
        "transaction.state.log.num.partitions": "12",
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": insync,
        "unclean.leader.election.enable": "false",
        "auto.create.topics.enable": "false",  # the hub creates its topics with their settings
        "group.initial.rebalance.delay.ms": "0",
    }


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _under_replicated(admin: Any) -> list[str]:
    described = admin.describe_topics(admin.list_topics())
    return [
        f"{d['name']}[{p['partition_index']}]"
        for d in described
        for p in d["partitions"]
        if set(p["isr_nodes"]) != set(p["replica_nodes"])
    ]


def cluster_id() -> str:
    """A KRaft cluster id: a random UUID in Kafka's URL-safe base64 form, never starting with "-" (as Kafka's
    own Uuid.randomUuid ensures): `kafka-storage format -t -abc...` reads such an id as an option and fails,
    one start in 64."""
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


@dataclass
class Node:
    node_id: int
    port: int
    controller_port: int
    directory: Path
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def properties(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    def alive(self) -> bool:
        return process_alive(self.process, self.pid, marker=str(self.properties))


class KafkaCluster:
    """One or three Apache Kafka KRaft nodes, each both broker and controller (combined mode)."""

    KIND = "kafka"

    def __init__(
        self, data_dir: Path, brokers: int = 1, cache: Path | None = None, *, die_with_parent: bool = False
    ) -> None:
        """`die_with_parent`: the nodes are killed when the starting process dies (tests: a killed test run
        leaves no JVM behind). `tiphub broker start` leaves them running for later commands."""
        self.die_with_parent = die_with_parent
        if brokers not in (1, 3):
            raise BrokerError(f"--brokers must be 1 or 3, not {brokers}: a KRaft quorum here is one or three nodes")
        self.data_dir = data_dir.resolve()
        self.cache = (cache or self.data_dir).resolve()
        self.nodes: list[Node] = []
        self.brokers = brokers
        self._jars: list[Path] = []

    # -- what it is --------------------------------------------------------------------------
    @property
    def replication(self) -> int:
        """The hub's topics: every node holds every partition."""
        return self.brokers

    @property
    def min_insync(self) -> int:
        return 2 if self.brokers >= 3 else 1

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def state_file(self) -> Path:
        return self.data_dir / "cluster.json"

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes if node.pid is not None]

    def _save(self) -> None:
        state = {
            "kind": self.KIND,
            "version": KAFKA_VERSION,
            "brokers": self.brokers,
            "cache": str(self.cache),
            "nodes": [
                {"id": n.node_id, "port": n.port, "controller_port": n.controller_port, "pid": n.pid}
                for n in self.nodes
            ],
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)

    @classmethod
    def find_running(cls, data_dir: Path) -> KafkaCluster | None:
        """The cluster a previous command started in `data_dir`, if one of its nodes is alive."""
        state_file = data_dir / "cluster.json"
        if not state_file.exists():
            return None
        state = json.loads(state_file.read_text())
        cluster = cls(data_dir, state["brokers"], Path(state["cache"]))
        cluster.nodes = [
            Node(n["id"], n["port"], n["controller_port"], cluster.data_dir / f"node-{n['id']}", n["pid"])
            for n in state["nodes"]
        ]
        return cluster if any(node.alive() for node in cluster.nodes) else None

    # -- start and stop ----------------------------------------------------------------------
    def start(self, timeout: float = 120.0, progress: Callable[[str], None] = log.info) -> KafkaCluster:
        java = require_java()
        self._jars = classpath(self.cache, progress)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.nodes:
            ports = iter(free_ports(2 * self.brokers))
            ids = range(1, self.brokers + 1)
            self.nodes = [Node(i, next(ports), next(ports), self.data_dir / f"node-{i}") for i in ids]
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        cid = self._layout()
        for node in self.nodes:
            self._configure(node, voters)
        progress(f"formatting KRaft storage for {self.brokers} node(s)")
        formatting = [
            subprocess.Popen(
                [*self._java(java, node, STORAGE_TOOL), "format", "-t", cid, "-c", str(node.properties)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            for node in self.nodes
            if not (node.directory / "data" / "meta.properties").exists()
        ]
        failed = []
        for proc in formatting:
            try:
                output, _ = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            if proc.returncode != 0:
                failed.append(output.decode(errors="replace")[-400:])
        if failed:
            raise BrokerError(f"formatting KRaft storage failed: {failed[0]}")
        progress(f"starting Apache Kafka {KAFKA_VERSION}: {self.brokers} node(s) on 127.0.0.1")
        try:
            for node in self.nodes:
                self._launch(java, node)
            self._save()
            self.wait_ready(timeout)
        except BaseException:  # a failure, Ctrl-C: no node is left running behind the caller
            self.stop(timeout=10)
            raise
        return self

    def _layout(self) -> str:
        """The cluster id of this data directory, fixed at its first start with its node count. A directory
        formatted for another number of nodes cannot be reused: its nodes would not agree on the cluster."""
        layout = self.data_dir / "layout.json"
        if layout.exists():
            known = json.loads(layout.read_text())
            if known["brokers"] != self.brokers:
                raise BrokerError(
                    f"{self.data_dir} holds a {known['brokers']}-node Apache Kafka; start it with --brokers "
                    f"{known['brokers']}, or remove the directory for a new {self.brokers}-node one"
                )
            return str(known["cluster_id"])
        cid = cluster_id()
        layout.write_text(json.dumps({"brokers": self.brokers, "cluster_id": cid}))
        return cid

    def _configure(self, node: Node, voters: str) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        settings = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": node.directory / "data",
            "num.partitions": 1,
            **replication_settings(self.brokers),
        }
        node.properties.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        (node.directory / "log4j2.properties").write_text(LOG4J2.format(log=node.log_file))

    def _java(self, java: str, node: Node, main: str) -> list[str]:
        return [
            java,
            "-Xms64m",
            HEAP,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node.directory / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={node.directory}",
            "-cp",
            os.pathsep.join(str(jar) for jar in self._jars),
            main,
        ]

    def _launch(self, java: str, node: Node) -> None:
        if not self._jars:
            self._jars = classpath(self.cache)
        console = open(node.directory / "console.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [*self._java(java, node, MAIN), str(node.properties)],
            stdout=console,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop the nodes in order
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        console.close()
        node.process, node.pid = proc, proc.pid

    def wait_ready(self, timeout: float = 120.0, **options: Any) -> None:
        """Until metadata answers and every live node is registered as a broker."""
        deadline = time.monotonic() + timeout
        live = [node for node in self.nodes if node.alive()]
        if not live:
            raise BrokerError(f"no Apache Kafka node is running: see {self.nodes[0].directory / 'console.log'}")
        for node in live:  # each node's own port: a client that bootstraps from a closed port logs errors
            wait_ready(node.address, max(1.0, deadline - time.monotonic()), **options)
        while True:
            registered = self.registered(**options)
            if {n.node_id for n in live} <= registered:
                return
            dead = [n for n in live if not n.alive()]
            if dead:
                raise BrokerError(f"Apache Kafka node {dead[0].node_id} exited: see {dead[0].log_file}")
            if time.monotonic() > deadline:
                raise BrokerError(f"only nodes {sorted(registered)} registered within {timeout:.0f}s")
            time.sleep(0.2)

    def registered(self, **options: Any) -> set[int]:
        admin = admin_client(",".join(n.address for n in self.nodes if n.alive()), **options)
        try:
            return {int(b["broker_id"]) for b in admin.describe_cluster()["brokers"] if not b.get("is_fenced")}
        finally:
            admin.close()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every node (SIGTERM: a controlled shutdown), SIGKILL those that do not go in time."""
        for node in self.nodes:
            if node.alive():
                os.kill(node.pid, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = time.monotonic() + timeout
        while any(node.alive() for node in self.nodes) and time.monotonic() < deadline:
            time.sleep(0.1)
        for node in self.nodes:
            if node.alive():
                log.warning("Apache Kafka node %s did not stop in %.0fs; killing it", node.node_id, timeout)
                self.kill(node)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    # -- faults ------------------------------------------------------------------------------
    def node(self, node_id: int) -> Node:
        return next(node for node in self.nodes if node.node_id == node_id)

    def kill(self, node: Node) -> None:
        """SIGKILL one node: no controlled shutdown, no flush."""
        if node.pid is not None and node.alive():
            os.kill(node.pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while node.alive() and time.monotonic() < deadline:
                time.sleep(0.05)

    def restart(self, node: Node, *, clean: bool = True, timeout: float = 120.0) -> None:
        """Stop (SIGTERM, or SIGKILL with clean=False) and start one node again; wait until it is back."""
        if clean and node.alive():
            os.kill(node.pid, signal.SIGTERM)  # type: ignore[arg-type]
            deadline = time.monotonic() + timeout
            while node.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
        self.kill(node)
        self._launch(require_java(), node)
        self._save()
        self.wait_ready(timeout)
        self.wait_in_sync(timeout)

    def wait_in_sync(self, timeout: float = 120.0, **options: Any) -> None:
        """Until every partition of every topic has all its replicas in sync again (a rolling restart
        takes the next node down only then, or a partition could be left with one copy)."""
        deadline = time.monotonic() + timeout
        while True:
            behind = self._ask(_under_replicated, **options)
            if not behind:
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"partitions still under-replicated after {timeout:.0f}s: {behind[:5]}")
            time.sleep(0.3)

    def start_node(self, node: Node, timeout: float = 120.0) -> None:
        """Start a node that was killed."""
        self._launch(require_java(), node)
        self._save()
        self.wait_ready(timeout)

    def active_controller(self, **options: Any) -> Node:
        """The KRaft quorum's leader, which is the active controller (DescribeQuorum, KIP-595)."""
        quorum = self._ask(lambda admin: admin.describe_metadata_quorum(), **options)
        for topic in quorum["topics"]:
            for part in topic["partitions"]:
                if part["leader_id"] >= 0:
                    return self.node(int(part["leader_id"]))
        raise BrokerError("the KRaft quorum has no leader")

    def leader_of(self, topic: str, partition: int = 0, **options: Any) -> Node:
        for described in self._ask(lambda admin: admin.describe_topics([topic]), **options):
            for part in described["partitions"]:
                if part["partition_index"] == partition and part["leader_id"] >= 0:
                    return self.node(int(part["leader_id"]))
        raise BrokerError(f"no leader for {topic}-{partition}")

    def _ask(self, question: Callable[[Any], Any], attempts: int = 20, **options: Any) -> Any:
        """An admin request to the live nodes. Right after a node died the client may still pick it (the
        metadata names it until its session times out): ask again."""
        for attempt in range(attempts):
            admin = admin_client(",".join(n.address for n in self.nodes if n.alive()), **options)
            try:
                return question(admin)
            except Exception as exc:
                if attempt + 1 == attempts:
                    raise BrokerError(f"the cluster did not answer: {exc}") from exc
                time.sleep(0.5)
            finally:
                admin.close()
        raise AssertionError("unreachable")
