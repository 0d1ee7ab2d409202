"""On the real broker: every accepted report gets, for every recipient, exactly the decision decide()
gives under the agreements loaded on tip.agreements; and no canary value reaches any topic."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter

import pytest

from policies.engine import decide
from producers.simulate import simulate
from schemas.codec import WireCodec
from streams.agreements import AgreementHistory
from tests.harness import Hub, read_topics
from tests.integration.test_canary import all_topics, canary_reports, leaks

pytestmark = pytest.mark.integration
RECIPIENTS = ["HSU-MY", "HSU-PH", "HSU-TH", "NZ-LABOUR", "NZ-NIC"]


def test_decisions_on_the_topic_are_exactly_what_decide_gives(hub: Hub) -> None:
    reports = simulate(60, seed=21).reports[:150] + canary_reports()[:2]
    hub.publish(reports)
    hub.start_worker()
    accepted, _ = hub.wait_for_outcomes(len(reports))
    hub.wait_for_quiet()

    codec = WireCodec()
    history = AgreementHistory()
    for value in hub.decoded(hub.topics.agreements):
        history.apply(value)
    assert history.agreements.recipients() == RECIPIENTS

    decisions = hub.decoded(hub.topics.decisions)
    assert len(decisions) == len(accepted) * len(RECIPIENTS)
    by_key = {(d["item_id"], d["recipient"]): d for d in decisions}
    assert len(by_key) == len(decisions), "a decision was written twice"
    for record in accepted:
        item = codec.decode(record.value)[1]
        for recipient in RECIPIENTS:
            expected = decide(item, recipient, history.agreements, item["accepted_at"])
            got = by_key[(item["report_id"], recipient)]
            assert got["decision_id"] == expected.decision_id
            assert (got["allowed"], got["reason"]) == (expected.allowed, expected.reason)
            assert got["retain_until"] == expected.retain_until
            assert got["view_json"] == (None if expected.view is None else json.dumps(expected.view, sort_keys=True))
            assert [(f["path"], f["rule"], f["basis"]) for f in got["fields"]] == [
                (f.path, f.rule, f.basis) for f in expected.fields
            ]
    outcomes = Counter((d["recipient"], d["allowed"]) for d in decisions)
    assert outcomes[("NZ-NIC", True)] > 0 and outcomes[("HSU-TH", True)] > 0 and outcomes[("HSU-TH", False)] > 0

    # Every decision is in the audit, and the audit verifies.
    audit = [codec.decode(r["event"])[1] for r in hub.decoded(hub.topics.audit) if r["event"] is not None]
    assert Counter(e["kind"] for e in audit)["decision"] == len(decisions)
    result = subprocess.run(
        [sys.executable, "-m", "tiphub", "audit", "verify"], env=hub.env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"audit verified: {len(audit)} entries" in result.stdout

    # No canary value anywhere: decisions, audit, agreements and every other topic.
    records = asyncio.run(read_topics(hub.broker, all_topics(hub.broker, hub.prefix), isolation="read_uncommitted"))
    assert leaks(records) == []


def test_agreements_are_loaded_once_per_version(hub: Hub) -> None:
    hub.start_worker()
    hub.publish(simulate(2, seed=1).reports[:1])
    hub.wait_for_outcomes(1)
    hub.stop_worker()
    hub.start_worker()  # a restart loads nothing new: the same content is already on the topic
    hub.publish(simulate(2, seed=2).reports[:1])
    hub.wait_for_outcomes(2)
    loaded = hub.decoded(hub.topics.agreements)
    assert len(loaded) == 11  # 5 recipients + 6 originators
    assert len({e["hash"] for e in loaded}) == 11
