"""Scale-out on the real broker: two `tiphub worker` processes split the partitions of every stage and
write the same outputs, each once, as one worker does on the same input."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from producers.simulate import simulate
from schemas.codec import WireCodec
from tests.harness import Hub, final_signals, open_signals, versions_are_gapless

pytestmark = pytest.mark.integration


def outputs(hub: Hub) -> dict[str, object]:
    """What a hub wrote, in forms that do not depend on which worker wrote what, or when."""
    codec = WireCodec()
    accepted = Counter(r.key.decode() for r in hub.read(hub.topics.accepted) if r.key)
    # Not the decision id: it hashes the view, whose ciphertext references name vault keys bound to
    # each submission's envelope, and the two hubs were sent the same reports in different envelopes.
    decisions = Counter(
        (d["item_id"], d["recipient"], d["allowed"], d["reason"], tuple(f["path"] for f in d["fields"]))
        for d in hub.decoded(hub.topics.decisions)
    )
    audited = Counter()
    for entry in hub.decoded(hub.topics.audit):
        if entry["event"] is not None:
            event = codec.decode(entry["event"])[1]
            audited[(event["kind"], event["item_id"], event["recipient"], event["outcome"])] += 1
    return {
        "accepted": accepted,
        "rejected": len(hub.decoded(hub.topics.rejected)),
        "decisions": decisions,
        "audited": audited,
        "open_signals": open_signals(final_signals(hub)),
    }


def partitions_in_log(log: str, phrase: str) -> set[int]:
    return {int(p) for found in re.findall(rf"{phrase} \[([0-9, ]+)\]", log) for p in found.split(",")}


def test_two_workers_write_what_one_worker_writes_each_output_once(broker: str, tmp_path: Path) -> None:
    reports = simulate(50, seed=23).reports
    with Hub.create(broker, tmp_path / "one", "one-worker") as one:
        one.publish(reports)
        one.start_worker("0")
        one.wait_for_outcomes(len(reports))
        one.wait_for_quiet()
        expected = outputs(one)
        versions_are_gapless(one)

    with Hub.create(broker, tmp_path / "two", "two-workers", keys_from=tmp_path / "one" / "home") as two:
        two.start_worker("0")
        two.start_worker("1")
        two.publish(reports)
        two.wait_for_outcomes(len(reports))
        two.wait_for_quiet()
        got = outputs(two)
        versions_are_gapless(two)
        logs = {w: two.worker_log(w) for w in ("0", "1")}

    # The work was split: each worker owned accept partitions, and together they owned all of them.
    owned = {w: partitions_in_log(log, "restored accepted ids of partitions") for w, log in logs.items()}
    assert owned["0"] and owned["1"], owned
    assert owned["0"] | owned["1"] == set(range(two.settings.partitions))

    # Nothing lost, nothing duplicated: every report accepted once, every decision and audit entry once.
    assert got["accepted"] == Counter({r["report_id"]: 1 for r in reports})
    assert got["rejected"] == 0
    recipients = {decision[1] for decision in expected["decisions"]}  # type: ignore[attr-defined]
    assert len(recipients) >= 5
    assert set(got["decisions"].values()) == {1}  # type: ignore[attr-defined]
    assert sum(got["decisions"].values()) == len(reports) * len(recipients)  # type: ignore[attr-defined]

    # And it is the same output as one worker's.
    assert got["decisions"] == expected["decisions"]
    assert got["audited"] == expected["audited"]
    assert got["open_signals"] == expected["open_signals"]
    assert len(expected["open_signals"]) > 10  # type: ignore[arg-type]
