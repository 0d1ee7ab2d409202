"""The audit chain on the real broker: it verifies when intact, and every kind of tampering is caught
and named at its first broken link."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from producers.simulate import simulate
from schemas.codec import WireCodec
from streams.audit_verify import verify_records
from streams.feeds import read_partitions
from tests.harness import PARTITIONS, Hub
from tiphub.audit import AnchorStore
from tiphub.database import Database
from tiphub.keys import KeyStore

pytestmark = pytest.mark.integration


@pytest.fixture
def audited(hub: Hub):  # type: ignore[no-untyped-def]
    hub.publish(simulate(20, seed=5).reports[:40])
    hub.start_worker()
    hub.wait_for_outcomes(40)
    hub.wait_for_quiet()
    raw = asyncio.run(read_partitions(hub.broker, hub.topics.audit, PARTITIONS))
    anchors = AnchorStore(Database(hub.settings.audit_anchor_database)).all(hub.topics.audit)
    public = KeyStore(hub.home).hub_signing_key().public_key()
    return hub, raw, anchors, public


def busiest(raw):  # type: ignore[no-untyped-def]
    return max(raw, key=lambda p: len(raw[p]))


def entry_positions(raw, partition):  # type: ignore[no-untyped-def]
    codec = WireCodec()
    return [i for i, (_, value) in enumerate(raw[partition]) if codec.decode(value)[1]["event"] is not None]


def test_an_intact_chain_verifies_against_its_anchor(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors, public = audited
    report = verify_records(hub.topics.audit, raw, anchors, public)
    assert report.ok, [p.problem for p in report.partitions]
    assert sum(p.entries for p in report.partitions) == 40 * 5  # one audit event per decision
    assert all(p.anchor_seq == p.last_seq for p in report.partitions if p.entries)


def test_a_flipped_byte_is_caught_at_its_entry(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors, public = audited
    p = busiest(raw)
    index = entry_positions(raw, p)[5]
    offset, value = raw[p][index]
    codec = WireCodec()
    record = codec.decode(value)[1]
    event = bytearray(record["event"])
    event[-3] ^= 0x01  # inside the AuditEvent's last string: still decodable, different content
    tampered = codec.encode("tiphub.AuditRecord", {**record, "event": bytes(event)})
    raw[p][index] = (offset, tampered)
    report = verify_records(hub.topics.audit, raw, anchors, public)
    broken = [x for x in report.partitions if not x.ok]
    assert [x.partition for x in broken] == [p]
    assert broken[0].problem == f"seq {record['seq']}: content does not match its hash (altered)"


def test_a_flipped_byte_in_the_raw_record_is_caught(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors, public = audited
    p = busiest(raw)
    index = entry_positions(raw, p)[3]
    offset, value = raw[p][index]
    raw[p][index] = (offset, value[:20] + bytes([value[20] ^ 0x80]) + value[21:])
    report = verify_records(hub.topics.audit, raw, anchors, public)
    assert not report.ok
    assert next(x for x in report.partitions if x.partition == p).problem is not None


def test_a_deleted_event_is_caught(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors, public = audited
    p = busiest(raw)
    del raw[p][entry_positions(raw, p)[4]]
    report = verify_records(hub.topics.audit, raw, anchors, public)
    problem = next(x for x in report.partitions if x.partition == p).problem
    assert problem is not None and "seq 4 was expected (entries before it were deleted)" in problem


def test_a_reordered_pair_is_caught(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors, public = audited
    p = busiest(raw)
    first, second = entry_positions(raw, p)[2:4]
    raw[p][first], raw[p][second] = raw[p][second], raw[p][first]
    report = verify_records(hub.topics.audit, raw, anchors, public)
    problem = next(x for x in report.partitions if x.partition == p).problem
    assert problem is not None and "seq 3 where seq 2 was expected" in problem


def test_a_truncated_tail_is_caught_by_the_anchor(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors, public = audited
    p = busiest(raw)
    positions = entry_positions(raw, p)
    raw[p] = raw[p][: positions[-3]]  # the last three entries and their checkpoint are gone
    report = verify_records(hub.topics.audit, raw, anchors, public)
    problem = next(x for x in report.partitions if x.partition == p).problem
    assert problem is not None and "(truncated)" in problem
    assert f"signed anchor is at seq {anchors[p].seq}" in problem


def test_a_forged_checkpoint_is_caught(audited) -> None:  # type: ignore[no-untyped-def]
    hub, raw, anchors, public = audited
    codec = WireCodec()
    p = busiest(raw)
    index = next(i for i, (_, v) in enumerate(raw[p]) if codec.decode(v)[1]["event"] is None)
    offset, value = raw[p][index]
    record = codec.decode(value)[1]
    raw[p][index] = (offset, codec.encode("tiphub.AuditRecord", {**record, "checkpoint_signature": b"\x00" * 64}))
    problem = next(
        x for x in verify_records(hub.topics.audit, raw, anchors, public).partitions if x.partition == p
    ).problem
    assert problem is not None and "invalid signature" in problem


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
    raw = asyncio.run(read_partitions(hub.broker, hub.topics.audit, PARTITIONS))
    anchors = AnchorStore(Database(hub.settings.audit_anchor_database)).all(hub.topics.audit)
    report = verify_records(hub.topics.audit, raw, anchors, KeyStore(hub.home).hub_signing_key().public_key())
    assert report.ok, [p.problem for p in report.partitions]
    assert sum(p.entries for p in report.partitions) == 600 * 5
    decisions = hub.decoded(hub.topics.decisions)
    assert len(decisions) == len({(d["item_id"], d["recipient"]) for d in decisions}) == 600 * 5
