"""The audit chain on the real broker: it verifies when intact, every kind of tampering is caught
and named at its first broken link, and what another writer of tip.audit appends is named and never
chained onto."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from adapters.kafka.feeds import read_partitions
from adapters.sql.anchors import AnchorStore
from adapters.sql.database import Database
from domain.audit_chain import Anchor, VerifyReport
from domain.log import RawRecord
from producers.simulate import simulate
from schemas.codec import WireCodec
from streams.audit_events import AUDIT_EVENT
from streams.audit_verify import verify_records
from tests.harness import PARTITIONS, Hub, forge_audit_entry
from tiphub.keys import KeyStore

pytestmark = pytest.mark.integration


def read_audit(hub: Hub) -> tuple[dict[int, list[RawRecord]], dict[int, Anchor]]:
    """tip.audit and its anchors as a verifier reads them: the anchors first (they never run ahead)."""
    anchors = AnchorStore(Database(hub.settings.audit_anchor_database)).all(hub.topics.audit)
    return asyncio.run(read_partitions(hub.broker, hub.topics.audit, PARTITIONS)), anchors


def verify(hub: Hub, raw: dict[int, list[RawRecord]], anchors: dict[int, Anchor]) -> VerifyReport:
    """What `tiphub audit verify` checks, with the hub's keys: its signing key's public half and the audit MAC key."""
    keys = KeyStore(hub.home)
    return verify_records(hub.topics.audit, raw, anchors, keys.hub_signing_key().public_key(), keys.audit_mac_key())


@pytest.fixture
def audited(hub: Hub):  # type: ignore[no-untyped-def]
    hub.publish(simulate(20, seed=5).reports[:40])
    hub.start_worker()
    hub.wait_for_outcomes(40)
    hub.wait_for_quiet()
    raw, anchors = read_audit(hub)
    return hub, raw, anchors


def busiest(raw):  # type: ignore[no-untyped-def]
    return max(raw, key=lambda p: len(raw[p]))


def entry_positions(raw, partition):  # type: ignore[no-untyped-def]
    codec = WireCodec()
    return [i for i, (_, value) in enumerate(raw[partition]) if codec.decode(value)[1]["event"] is not None]


def test_an_intact_chain_verifies_against_its_anchor(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors = audited
    report = verify(hub, raw, anchors)
    assert report.ok, [p.problem for p in report.partitions]
    assert sum(p.entries for p in report.partitions) == 40 * 5  # one audit event per decision
    assert all(p.anchor_seq == p.last_seq for p in report.partitions if p.entries)


def test_a_flipped_byte_is_caught_at_its_entry(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors = audited
    p = busiest(raw)
    index = entry_positions(raw, p)[5]
    offset, value = raw[p][index]
    codec = WireCodec()
    record = codec.decode(value)[1]
    event = bytearray(record["event"])
    event[-3] ^= 0x01  # inside the AuditEvent's last string: still decodable, different content
    tampered = codec.encode("tiphub.AuditRecord", {**record, "event": bytes(event)})
    raw[p][index] = (offset, tampered)
    report = verify(hub, raw, anchors)
    broken = [x for x in report.partitions if not x.ok]
    assert [x.partition for x in broken] == [p]
    assert broken[0].problem == f"seq {record['seq']}: content does not match its hash (altered)"


def test_a_flipped_byte_in_the_raw_record_is_caught(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors = audited
    p = busiest(raw)
    index = entry_positions(raw, p)[3]
    offset, value = raw[p][index]
    raw[p][index] = (offset, value[:20] + bytes([value[20] ^ 0x80]) + value[21:])
    report = verify(hub, raw, anchors)
    assert not report.ok
    assert next(x for x in report.partitions if x.partition == p).problem is not None


def test_a_deleted_event_is_caught(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors = audited
    p = busiest(raw)
    del raw[p][entry_positions(raw, p)[4]]
    report = verify(hub, raw, anchors)
    problem = next(x for x in report.partitions if x.partition == p).problem
    assert problem is not None and "seq 4 was expected (entries before it were deleted)" in problem


def test_a_reordered_pair_is_caught(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors = audited
    p = busiest(raw)
    first, second = entry_positions(raw, p)[2:4]
    raw[p][first], raw[p][second] = raw[p][second], raw[p][first]
    report = verify(hub, raw, anchors)
    problem = next(x for x in report.partitions if x.partition == p).problem
    assert problem is not None and "seq 3 where seq 2 was expected" in problem


def test_a_truncated_tail_is_caught_by_the_anchor(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors = audited
    p = busiest(raw)
    positions = entry_positions(raw, p)
    raw[p] = raw[p][: positions[-3]]  # the last three entries and their checkpoint are gone
    report = verify(hub, raw, anchors)
    problem = next(x for x in report.partitions if x.partition == p).problem
    assert problem is not None and "(truncated)" in problem
    assert f"signed anchor is at seq {anchors[p].seq}" in problem


def test_a_forged_checkpoint_is_caught(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors = audited
    codec = WireCodec()
    p = busiest(raw)
    index = next(i for i, (_, v) in enumerate(raw[p]) if codec.decode(v)[1]["event"] is None)
    offset, value = raw[p][index]
    record = codec.decode(value)[1]
    raw[p][index] = (offset, codec.encode("tiphub.AuditRecord", {**record, "checkpoint_signature": b"\x00" * 64}))
    problem = next(x for x in verify(hub, raw, anchors).partitions if x.partition == p).problem
    assert problem is not None and "invalid signature" in problem


def test_a_forged_tail_is_named_never_chained_onto_and_never_anchored(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, _ = audited
    codec = WireCodec()
    p = busiest(raw)
    forgery = forge_audit_entry(hub, p)
    forged_offset, seq, digest, last = forgery.offset, forgery.seq, forgery.hash, forgery.after

    raw, anchors = read_audit(hub)
    assert raw[p][-1][0] == forged_offset
    report = verify(hub, raw, anchors)
    assert not report.ok
    assert {x.partition: x.foreign_offsets for x in report.partitions} == {q: [] for q in raw} | {p: [forged_offset]}
    broken = next(x for x in report.partitions if x.partition == p)
    assert f"offset {forged_offset} (an entry without a MAC)" in str(broken.problem)
    assert broken.broken is None and broken.last_seq == last["seq"]  # not counted as the chain's next entry

    # A restarted worker restores the chain heads from the partitions' tails: the forgery is the tail of p.
    hub.stop_worker()
    hub.start_worker()
    more = simulate(20, seed=5).reports[40:52]
    hub.publish(more)
    hub.wait_for_outcomes(40 + len(more))
    hub.wait_for_quiet()

    raw, anchors = read_audit(hub)
    report = verify(hub, raw, anchors)
    assert {x.partition: x.foreign_offsets for x in report.partitions} == {q: [] for q in raw} | {p: [forged_offset]}
    assert all(x.broken is None and x.unanchored == [] for x in report.partitions), [
        x.problem for x in report.partitions
    ]
    # Every authentic entry is chained and anchored: one per decision, and the stage's own integrity report.
    decisions = hub.decoded(hub.topics.decisions)
    assert sum(x.entries for x in report.partitions) == len(decisions) + 1
    assert all(x.anchor_seq == x.last_seq for x in report.partitions)

    records = {offset: codec.decode(value)[1] for offset, value in raw[p]}
    after = [r for offset, r in sorted(records.items()) if offset > forged_offset]
    resumed = after[0]  # the chain goes on from the last authentic entry: seq taken again, prev_hash its hash
    assert (resumed["seq"], resumed["prev_hash"]) == (seq, last["hash"]) and resumed["hash"] != digest
    assert resumed["mac"] is not None
    assert digest not in {r["hash"] for r in records.values() if r["event"] is None}  # no checkpoint seals it
    assert anchors[p].head != digest and anchors[p].seq >= seq

    reported = codec.decode(resumed["event"], expect=AUDIT_EVENT)[1]
    assert (reported["kind"], reported["actor"], reported["outcome"]) == ("integrity", "chain_audit", "foreign_records")
    detail = json.loads(reported["detail"])
    assert detail["partition"] == p and detail["head_seq"] == last["seq"]
    assert detail["records"] == [{"offset": forged_offset, "reason": "an entry without a MAC"}]
    assert "not written by chain_audit" in hub.worker_log()

    cli = subprocess.run(
        [sys.executable, "-m", "tiphub", "audit", "verify"],
        env=hub.env(COLUMNS="400"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert f"offset {forged_offset} (an entry without a MAC)" in cli.stdout


def test_the_cli_verifies_the_real_chain(audited) -> None:  # type: ignore[no-untyped-def]
    hub, *_ = audited
    result = subprocess.run(
        [sys.executable, "-m", "tiphub", "audit", "verify"], env=hub.env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit verified: 200 entries in 3 chains" in result.stdout


def test_the_chain_stays_whole_when_the_worker_is_killed_mid_stream(hub: Hub) -> None:
    hub.publish(simulate(200, seed=8).reports[:600])
    hub.start_worker()
    deadline = time.monotonic() + 90
    while len(hub.read(hub.topics.audit)) < 600:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    hub.kill_worker()
    hub.start_worker()
    hub.wait_for_outcomes(600)
    hub.wait_for_quiet()
    report = verify(hub, *read_audit(hub))
    assert report.ok, [p.problem for p in report.partitions]
    assert sum(p.entries for p in report.partitions) == 600 * 5
    decisions = hub.decoded(hub.topics.decisions)
    assert len(decisions) == len({(d["item_id"], d["recipient"]) for d in decisions}) == 600 * 5
