"""Soak (make bench): rounds of faults while agencies publish. Each round publishes a batch and then,
at a random moment, SIGKILLs a worker, both workers, or stops and restarts the broker. At the end every
output is exactly once (tests/integration/test_faults.py's check). Counts go to build/soak-kills.json and
build/soak-all.json, the source of the table in docs/reliability.md."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from producers.simulate import simulate
from tests.harness import Hub, assert_everything_once, broker_kind, local_broker
from tests.integration.test_faults import wait_until_done_or_orphaned

ROUNDS = int(os.environ.get("TIPHUB_SOAK_ROUNDS", "16"))
KILLS = ("kill worker 0", "kill worker 1", "kill both workers")
ALL_FAULTS = (*KILLS, "restart the broker")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "name,faults",
    [("kills", KILLS), ("all", ALL_FAULTS)],
)
def test_soak_rounds_of_faults_lose_and_double_nothing(name: str, faults: tuple[str, ...], tmp_path: Path) -> None:
    rng = random.Random(41)
    broker = local_broker(tmp_path / "broker").start()  # of TIPHUB_TEST_BROKER's kind: Apache Kafka by default
    started = time.monotonic()
    tried: Counter[str] = Counter()
    try:
        with Hub.create(broker.bootstrap, tmp_path, "soak") as hub:
            reports = simulate(ROUNDS * 8, seed=43).reports
            chunks = [reports[i::ROUNDS] for i in range(ROUNDS)]
            hub.start_worker("0")
            hub.start_worker("1")
            for round_, chunk in enumerate(chunks):
                hub.publish(chunk)
                time.sleep(rng.uniform(0.0, 1.5))  # the fault lands anywhere in the batch's processing
                fault = faults[round_ % len(faults)]
                if fault == "restart the broker":
                    broker.stop()
                    time.sleep(1)
                    broker.start()
                else:
                    victims = {"kill worker 0": ["0"], "kill worker 1": ["1"]}.get(fault, ["0", "1"])
                    for instance in victims:
                        hub.kill_worker(instance)
                    for instance in victims:
                        hub.start_worker(instance)
                tried[fault] += 1
            wait_until_done_or_orphaned(hub, len(reports), timeout=300)
            accepted = Counter(r.key.decode() for r in hub.read(hub.topics.accepted))
            result = {
                "broker": broker_kind(),
                "rounds": ROUNDS,
                "reports": len(reports),
                "faults": dict(tried),
                "lost": sum(1 for r in reports if r["report_id"] not in accepted),
                "duplicated": sum(n - 1 for n in accepted.values()),
                "seconds": round(time.monotonic() - started, 1),
            }
            try:
                result |= assert_everything_once(hub, reports)
            finally:
                out = Path("build") / f"soak-{name}-{broker_kind()}.json"
                out.parent.mkdir(exist_ok=True)
                out.write_text(json.dumps(result, indent=2) + "\n")
                print("\nsoak:", json.dumps(result))
    finally:
        broker.stop()
