"""Faults on the real broker, each bounded in time and on loopback only: the broker stopped and started
again mid-stream, and a worker SIGKILLed mid-stream. Afterwards every report is accepted exactly once,
every decision and audit entry is written once, signal versions have no gap or repeat, the audit chain
verifies and every lag is 0."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.simulate import simulate
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


def assert_everything_once(hub: Hub, reports: list[dict]) -> None:
    accepted = Counter(r.key.decode() for r in hub.read(hub.topics.accepted))
    assert accepted == Counter({r["report_id"]: 1 for r in reports})
    assert hub.decoded(hub.topics.rejected) == []
    decisions = Counter((d["item_id"], d["recipient"]) for d in hub.decoded(hub.topics.decisions))
    assert set(decisions.values()) == {1} and len(decisions) == 5 * len(reports)
    entries = [e for e in hub.decoded(hub.topics.audit) if e["event"] is not None]
    assert len(entries) == len({e["hash"] for e in entries}) == len(decisions)
    versions_are_gapless(hub)
    verify = subprocess.run(
        [sys.executable, "-m", "tiphub", "audit", "verify"], env=hub.env(), capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for stage in ("accept", "decide", "audit", "link", "correlate"):
        assert hub.lag(stage) == 0, stage


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
        assert_everything_once(hub, reports)


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
