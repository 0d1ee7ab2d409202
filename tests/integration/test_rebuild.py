"""`tiphub rebuild VIEW` on the real broker: the view recomputed from scratch beside the live one matches
it, except where an erasure made after the live view was derived must now show."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from adapters.kafka.embedded import admin_client
from producers.simulate import simulate
from tests.factories import make_report
from tests.harness import Hub
from tests.integration.test_erasure import OTHER, PERSON

pytestmark = pytest.mark.integration


def tiphub(hub: Hub, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiphub", *args], env=hub.env(), capture_output=True, text=True, timeout=180
    )


def test_rebuilt_decisions_match_the_live_ones_but_honour_a_later_erasure(hub: Hub) -> None:
    reports = [make_report(subjects=[PERSON]), make_report(subjects=[OTHER]), make_report()]
    hub.publish(reports)
    hub.start_worker()
    hub.wait_for_outcomes(len(reports))
    hub.wait_for_quiet()
    erased_report = reports[0]["report_id"]
    accepted = {r["report_id"]: r for r in hub.decoded(hub.topics.accepted)}
    token = accepted[erased_report]["subjects"][0]["identifiers"][0]["linkage_token"]
    assert tiphub(hub, "erase", "--subject-token", token).returncode == 0

    done = tiphub(hub, "rebuild", "decisions", "--drop")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    recipients = 5
    assert result["copied"]["tip.reports.accepted"] == len(reports)
    assert result["pairs"] == len(reports) * recipients and result["missing_in_rebuild"] == 0
    assert result["same_outcome"] == result["pairs"]  # who may see what did not change ...
    assert result["changed"] and all(c.startswith(erased_report) for c in result["changed"])  # ... only the views
    assert result["identical"] == result["pairs"] - len(result["changed"])
    admin = admin_client(hub.broker)
    try:
        remaining = [t for t in admin.list_topics() if t.startswith(result["prefix"])]
    finally:
        admin.close()
    assert result["dropped"] and remaining == []


def test_rebuilt_signals_are_the_live_open_signals(hub: Hub) -> None:
    reports = simulate(25, seed=53).reports
    hub.publish(reports)
    hub.start_worker()
    hub.wait_for_outcomes(len(reports))
    hub.wait_for_quiet()
    done = tiphub(hub, "rebuild", "signals", "--drop")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["live_open_signals"] >= 5
    assert result["rebuilt_open_signals"] == result["identical"] == result["live_open_signals"]
    assert (result["only_live"], result["only_rebuilt"], result["differ"]) == ([], [], [])
