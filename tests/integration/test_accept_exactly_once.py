"""Simulated agencies publish through the real broker; the worker accepts each report exactly once."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from producers.simulate import simulate
from streams.topics import report_partition
from tests.harness import Hub

pytestmark = pytest.mark.integration


def _simulated_reports(count: int, seed: int) -> list[dict]:
    simulation = simulate(cases=count // 3 + 10, seed=seed)
    reports = simulation.reports[:count]
    assert len(reports) == count
    return reports


def test_2000_simulated_reports_are_each_accepted_exactly_once(hub: Hub) -> None:
    published = hub.publish(_simulated_reports(2000, seed=11))
    hub.start_worker()

    accepted, rejected = hub.wait_for_outcomes(2000)

    assert rejected == []
    keys = Counter(r.key.decode() for r in accepted)
    assert len(accepted) == 2000
    assert set(keys) == set(published)
    assert max(keys.values()) == 1
    # Each accepted report sits in the one partition its report_id owns, whichever the agency chose.
    assert all(r.partition == report_partition(r.key.decode(), hub.topics.partitions) for r in accepted)


@pytest.mark.noida
def test_a_worker_killed_mid_stream_and_restarted_accepts_every_report_exactly_once(
    hub: Hub,
) -> None:
    published = hub.publish(_simulated_reports(2000, seed=12))
    hub.start_worker()
    for kill_after in (300, 1100):  # two SIGKILLs, each in the middle of the stream
        deadline = time.monotonic() + 90
        while len(hub.read(hub.topics.accepted)) < kill_after:
            assert time.monotonic() < deadline, "worker made no progress"
            time.sleep(0.05)
        hub.kill_worker()
        hub.start_worker()  # same instance id: takes its own place in the group at once

    accepted, rejected = hub.wait_for_outcomes(2000)

    assert rejected == []
    keys = Counter(r.key.decode() for r in accepted)
    assert sorted(keys) == sorted(published)
    duplicates = {k: n for k, n in keys.items() if n > 1}
    assert duplicates == {}
    assert hub.lag() == 0


def test_resubmitting_an_accepted_report_is_refused_as_a_duplicate(hub: Hub) -> None:
    reports = _simulated_reports(40, seed=13)
    hub.publish(reports)
    hub.start_worker()
    hub.wait_for_outcomes(40)

    hub.publish(reports[:10])  # the same report ids again, freshly signed
    hub.wait_for_outcomes(50)
    hub.stop_worker()
    hub.start_worker()  # a restarted worker still knows what was accepted
    hub.publish(reports[10:15])
    accepted, rejected = hub.wait_for_outcomes(55)

    assert len(accepted) == 40
    assert Counter(r["reason"] for r in rejected) == {"duplicate_report_id": 15}
    assert {r["report_id"] for r in rejected} == {r["report_id"] for r in reports[:15]}
