"""What `tiphub eval` scores (streams/evaluation.py): each signal as its latest version in the hub's own
scope; the copies scoped to what a partner may see are not extra signals."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.correlate import Signal, evaluate_against_truth
from streams.agents.correlate_signals import signal_record
from streams.evaluation import latest_hub_signals

AT = datetime(2026, 10, 30, tzinfo=UTC)


def signal(signal_id: str, *report_ids: str) -> Signal:
    return Signal(
        signal_id=signal_id,
        requirement_id="IR-1",
        entity="p-1",
        status="open",
        merged_into=None,
        report_ids=report_ids,
        agencies=("NZ-CUSTOMS", "NZ-POLICE"),
        elements=("ACT_TRANSPORT", "MEANS_DECEPTION", "PURPOSE_FORCED_LABOUR"),
        act_means_purpose=("act", "means", "purpose"),
        minor_involved=False,
        score=0.9,
        first_seen=AT,
        last_seen=AT,
        updated_at=AT,
    )


def test_a_signal_counts_once_as_its_latest_version_and_partner_scopes_not_at_all() -> None:
    records = [
        signal_record(1, signal("s1", "r1", "r2")),
        signal_record(3, signal("s1", "r1", "r2", "r3", "r4")),
        signal_record(2, signal("s1", "r1", "r2", "r3")),  # read after version 3: another partition
        signal_record(1, signal("s1-th", "r1"), scope="HSU-TH"),
    ]
    latest = latest_hub_signals(records)
    assert [(s.signal_id, s.report_ids) for s in latest] == [("s1", ("r1", "r2", "r3", "r4"))]
    scores = evaluate_against_truth(latest, {"IR-1": [{"report_ids": ["r1", "r2", "r3", "r4"]}]})
    assert scores["IR-1"]["precision"] == scores["IR-1"]["recall"] == 1.0
