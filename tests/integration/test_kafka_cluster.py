"""Faults on a three-node Apache Kafka KRaft cluster (each node broker and controller; topics with three
replicas and min.insync.replicas=2), each with a worker SIGKILLed during it: the leader of the partitions
the worker writes is SIGKILLed; the active controller is SIGKILLed; every node is restarted in turn under
load. Afterwards every report is accepted once, every decision and audit entry written once, signal
versions are gapless, `tiphub audit verify` passes and every lag is 0 (`assert_everything_once`)."""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.kafka.apache_kafka import KafkaCluster, Node
from producers.simulate import simulate
from tests.harness import KAFKA_CACHE, Hub, assert_everything_once, broker_kind

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(420),  # a node down slows every client until its session times out
    pytest.mark.skipif(broker_kind() != "kafka", reason="the cluster is Apache Kafka's: TIPHUB_TEST_BROKER=kafka"),
]
CASES = 40


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    started = KafkaCluster(tmp_path_factory.mktemp("cluster"), 3, cache=KAFKA_CACHE, die_with_parent=True).start()
    try:
        yield started
    finally:
        started.stop(timeout=30)


@pytest.fixture(autouse=True)
def every_node_up(cluster: KafkaCluster) -> Iterator[None]:
    """Each test starts on a whole cluster, whatever the one before left. Afterwards, the sockets kafka-python
    opened towards a dead node and never closed are collected here, not in whichever test runs next."""
    for node in cluster.nodes:
        if not node.alive():
            cluster.start_node(node)
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def mid_stream(hub: Hub, reports: list[dict], seed_accepted: int = 15) -> None:
    """Publish the first half and wait until the worker is visibly in the middle of it."""
    hub.publish(reports[: len(reports) // 2])
    deadline = time.monotonic() + 90
    while len(hub.read(hub.topics.accepted)) < seed_accepted:
        assert time.monotonic() < deadline, hub.worker_log()[-3000:]
        time.sleep(0.05)


def finish(cluster: KafkaCluster, hub: Hub, reports: list[dict], down: Node | None) -> None:
    """The rest of the reports, the killed node back, and everything checked once the hub is quiet."""
    hub.publish(reports[len(reports) // 2 :])
    if down is not None:
        cluster.start_node(down)
    hub.wait_for_outcomes(len(reports), timeout=240)
    hub.wait_for_quiet(timeout=180)
    assert all(node.alive() for node in cluster.nodes)
    assert_everything_once(hub, reports)


def test_the_leader_of_the_partitions_a_worker_writes_is_killed_and_so_is_the_worker(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    reports = simulate(CASES, seed=41).reports
    with Hub.create(cluster.bootstrap, tmp_path, "leader-kill", replication=3) as hub:
        hub.start_worker()
        mid_stream(hub, reports)
        leader = cluster.leader_of(hub.topics.accepted, 0)
        cluster.kill(leader)  # SIGKILL: no controlled shutdown
        hub.kill_worker()  # and the worker, mid-stream: a transaction of it may be open on the dead leader
        hub.start_worker()
        deadline = time.monotonic() + 60  # the controller fences a broker after its session times out
        while cluster.leader_of(hub.topics.accepted, 0) == leader:
            assert time.monotonic() < deadline, "leadership did not move to an in-sync replica"
            time.sleep(0.2)
        finish(cluster, hub, reports, down=leader)


def test_the_active_controller_is_killed_and_so_is_the_worker(cluster: KafkaCluster, tmp_path: Path) -> None:
    reports = simulate(CASES, seed=43).reports
    with Hub.create(cluster.bootstrap, tmp_path, "controller-kill", replication=3) as hub:
        hub.start_worker()
        mid_stream(hub, reports)
        controller = cluster.active_controller()
        cluster.kill(controller)
        hub.kill_worker()
        hub.start_worker()
        deadline = time.monotonic() + 60
        while (elected := cluster.active_controller()) == controller:
            assert time.monotonic() < deadline, "no new controller was elected"
            time.sleep(0.2)
        assert elected.alive()
        finish(cluster, hub, reports, down=controller)


def test_every_node_restarts_in_turn_under_load_and_the_worker_is_killed_during_the_roll(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    reports = simulate(CASES, seed=47).reports
    chunks = [reports[i :: len(cluster.nodes) + 1] for i in range(len(cluster.nodes) + 1)]
    with Hub.create(cluster.bootstrap, tmp_path, "rolling-restart", replication=3) as hub:
        hub.start_worker()
        hub.publish(chunks[0])
        for i, node in enumerate(cluster.nodes):
            cluster.restart(node)  # SIGTERM (controlled shutdown), start, wait until every replica is in sync
            if i == 1:
                hub.kill_worker()
                hub.start_worker()
            hub.publish(chunks[i + 1])
        ordered = [r for chunk in chunks for r in chunk]
        hub.wait_for_outcomes(len(ordered), timeout=240)
        hub.wait_for_quiet(timeout=180)
        assert_everything_once(hub, ordered)
