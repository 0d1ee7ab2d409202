"""Faults on the real broker, each bounded in time and on loopback only: the broker stopped and started
again mid-stream, and a worker SIGKILLed mid-stream. Afterwards every report is accepted exactly once,
every decision and audit entry is written once, signal versions have no gap or repeat, the audit chain
verifies and every lag is 0."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from producers.simulate import simulate
from schemas.codec import WireCodec
from streams.feeds import UnsettledTopic, settled_end_offsets
from tests.harness import Hub, versions_are_gapless
from tiphub.embedded import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: the session's broker is shared and must stay up."""
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port()).start()
    try:
        yield broker
    finally:
        broker.stop()


def assert_everything_once(hub: Hub, reports: list[dict], *, identical_copies_allowed: bool = False) -> dict[str, int]:
    """Every report accepted once; every (report, recipient) decided and audited; signal versions
    gapless; the audit chain verifies; every lag 0. Returns how many decision records and audit entries
    repeat earlier ones. Strict (the default): none may. `identical_copies_allowed` admits exact copies
    (the same deterministic decision id, its event chained again) and nothing missing: the open defect
    of broker restarts in docs/reliability.md."""
    accepted = Counter(r.key.decode() for r in hub.read(hub.topics.accepted))
    assert accepted == Counter({r["report_id"]: 1 for r in reports})
    assert hub.decoded(hub.topics.rejected) == []
    decisions: dict[tuple[str, str], set[str]] = {}
    records = 0
    for d in hub.decoded(hub.topics.decisions):
        decisions.setdefault((d["item_id"], d["recipient"]), set()).add(d["decision_id"])
        records += 1
    assert len(decisions) == 5 * len(reports)  # nothing missing
    assert all(len(ids) == 1 for ids in decisions.values())  # copies, if any, are the same decision
    repeated = records - len(decisions)
    entries = [e for e in hub.decoded(hub.topics.audit) if e["event"] is not None]
    assert len(entries) == len({e["hash"] for e in entries}) >= records  # every decision record audited
    audited = {}
    for entry in entries:
        event = WireCodec().decode(entry["event"])[1]
        audited[(event["item_id"], event["recipient"])] = audited.get((event["item_id"], event["recipient"]), 0) + 1
    assert set(audited) == set(decisions)
    counts = {"decisions_repeated": repeated, "audit_entries_repeated": len(entries) - len(decisions)}
    if not identical_copies_allowed:
        assert counts == {"decisions_repeated": 0, "audit_entries_repeated": 0}
    versions_are_gapless(hub)
    verify = subprocess.run(
        [sys.executable, "-m", "tiphub", "audit", "verify"], env=hub.env(), capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for stage in ("accept", "decide", "audit", "link", "correlate"):
        assert hub.lag(stage) == 0, stage
    return counts


BROKER_RESTART_DEFECT = (
    "open defect (docs/reliability.md): after a noida-db restart a stage sometimes stays stuck in its group's "
    "rejoin, or re-writes a batch; most runs pass"
)


@pytest.mark.xfail(strict=False, reason=BROKER_RESTART_DEFECT)
def test_the_broker_stops_and_starts_again_mid_stream_and_nothing_is_lost_or_doubled(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    reports = simulate(60, seed=31).reports
    half = len(reports) // 2
    with Hub.create(own_broker.bootstrap, tmp_path, "broker-restart") as hub:
        hub.start_worker()
        hub.publish(reports[:half])
        deadline = time.monotonic() + 60
        while len(hub.read(hub.topics.accepted)) < 20:
            assert time.monotonic() < deadline, hub.worker_log()[-3000:]
            time.sleep(0.1)

        own_broker.stop()  # mid-stream: batches in flight are aborted, the worker keeps running
        time.sleep(2)
        own_broker.start()

        hub.publish(reports[half:])
        hub.wait_for_outcomes(len(reports), timeout=180)
        hub.wait_for_quiet(timeout=120)
        assert hub.workers["0"].poll() is None, "the worker did not survive the broker's restart"
        assert_everything_once(hub, reports, identical_copies_allowed=True)


def test_a_worker_killed_mid_stream_leaves_every_output_exactly_once(broker: str, tmp_path: Path) -> None:
    reports = simulate(60, seed=37).reports
    half = len(reports) // 2
    with Hub.create(broker, tmp_path, "worker-kill") as hub:
        hub.start_worker()
        hub.publish(reports[:half])
        deadline = time.monotonic() + 60
        while len(hub.read(hub.topics.accepted)) < 20:
            assert time.monotonic() < deadline, hub.worker_log()[-3000:]
            time.sleep(0.05)
        hub.kill_worker()  # SIGKILL: open transactions are left for the next incarnation to fence
        hub.publish(reports[half:])
        hub.start_worker()
        hub.wait_for_outcomes(len(reports), timeout=180)
        hub.wait_for_quiet(timeout=120)
        assert_everything_once(hub, reports)


def test_a_restore_waits_for_a_transaction_still_completing_below_the_end(broker: str, tmp_path: Path) -> None:
    """A stage restoring from its own output must not stop at a transaction that is still open: after a
    broker restart, noida-db completed such a commit late, and a correlator restored without those
    signal versions wrote them again. `settled_end_offsets` waits, and says so if it has to give up."""

    async def scenario() -> tuple[str, int, int]:
        topic = f"settle-{tmp_path.name}"
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await admin.close()
        tp = TopicPartition(topic, 0)
        producer = AIOKafkaProducer(bootstrap_servers=broker, transactional_id=f"settle-{tmp_path.name}")
        reader = AIOKafkaConsumer(bootstrap_servers=broker, isolation_level="read_committed")
        await producer.start()
        await reader.start()
        try:
            await producer.begin_transaction()
            await (await producer.send(topic, b"a version the restore must see"))
            try:
                await settled_end_offsets(broker, reader, [tp], timeout_s=1.0)
                refused = "no"
            except UnsettledTopic as exc:
                refused = str(exc)
            naive = (await reader.end_offsets([tp]))[tp]  # what a restore read up to before: nothing

            async def commit_soon() -> None:
                await asyncio.sleep(0.5)
                await producer.commit_transaction()

            committing = asyncio.create_task(commit_soon())
            settled = (await settled_end_offsets(broker, reader, [tp], timeout_s=20.0))[tp]
            await committing
            return refused, naive, settled
        finally:
            await reader.stop()
            await producer.stop()

    refused, naive, settled = asyncio.run(scenario())
    assert "transactions still open" in refused
    assert naive == 0 and settled == 2  # the record and its commit marker
