"""The audit chain, pure: records the chaining stage did not write are named and never chained onto.

The chain is written by the real chaining stage's batch logic (`ChainAudit.handle`, its heads set so
no broker is needed); what an attacker with write access to tip.audit appends is built by hand, exactly
as they could: the next seq, the last entry's hash as prev_hash, a correct entry hash.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.memory.log import MemoryLog
from adapters.sql.anchors import AnchorStore
from adapters.sql.database import Database
from domain import crypto
from domain.audit_chain import (
    GENESIS,
    Anchor,
    AuditHeadContradicted,
    PartitionReport,
    RestoredHead,
    checkpoint_statement,
    entry_hash,
    restore_head,
)
from schemas.codec import WireCodec
from streams.agents.chain_audit import ChainAudit
from streams.audit_events import AUDIT_EVENT, audit_event
from streams.audit_verify import decode_audit_records, verify_records
from streams.topics import Topics

TOPICS = Topics(prefix="unit.", partitions=1)
CODEC = WireCodec()
AUDIT_RECORD_V1 = CODEC.registry.versions("tip.audit-value")[0]


@dataclass
class Intake:
    """An intake record as the transactional processor hands it to the stage."""

    partition: int
    offset: int
    value: bytes


@dataclass
class Partition:
    """Partition 0 of tip.audit: what the chaining stage and anyone else wrote there, in offset order."""

    stage: ChainAudit
    anchors: AnchorStore
    signing_key: Ed25519PrivateKey
    mac_key: bytes
    log: list[tuple[int, bytes]] = field(default_factory=list)
    next_offset: int = 0

    def write(self, value: bytes) -> int:
        offset = self.next_offset
        self.log.append((offset, value))
        self.next_offset += 1
        return offset

    def batch(self, events: int, *, commit: bool = True) -> list[int]:
        """The chaining stage chains `events` intake events in one transaction; returns their offsets."""
        intake = [
            Intake(0, i, CODEC.encode(AUDIT_EVENT, audit_event("decision", "test", "shared"))) for i in range(events)
        ]
        outputs = asyncio.run(self.stage.handle(intake))
        offsets = [self.write(o.value) for o in outputs]
        if commit:
            self.stage.committed()
            self.next_offset += 1  # the transaction's commit marker takes an offset
        else:
            self.stage.aborted()
        return offsets

    def head(self) -> tuple[int, bytes]:
        """What an attacker reads back from the topic: the last entry's seq and hash."""
        last = [r for _, r in self.records() if r is not None and r["event"] is not None][-1]
        return last["seq"], last["hash"]

    def forge(self, *, seq: int | None = None, prev: bytes | None = None, **fields: Any) -> int:
        """Append an entry that links to the current tail, as a writer of tip.audit without the MAC key can."""
        last_seq, last_hash = self.head()
        seq, prev = last_seq + 1 if seq is None else seq, last_hash if prev is None else prev
        event = CODEC.encode(AUDIT_EVENT, audit_event("decision", "decide_sharing", "shared", item_id="forged"))
        schema = fields.pop("schema", None)
        record = {**entry(seq, prev, event), **fields}
        return self.write(CODEC.encode_with(schema, record) if schema else CODEC.encode("tiphub.AuditRecord", record))

    def records(self) -> list[tuple[int, dict[str, Any] | None]]:
        return decode_audit_records(CODEC, self.log)

    def verify(self) -> PartitionReport:
        public = self.signing_key.public_key()
        report = verify_records(TOPICS.audit, {0: self.log}, self.anchors.all(TOPICS.audit), public, self.mac_key)
        return report.partitions[0]


def entry(seq: int, prev: bytes, event: bytes, **fields: Any) -> dict[str, Any]:
    return {
        "partition": 0,
        "seq": seq,
        "prev_hash": prev,
        "hash": entry_hash(prev, seq, event),
        "event": event,
        "checkpoint_signature": None,
        "signing_key_id": None,
        "written_at": datetime.now(UTC),
        "mac": None,
        **fields,
    }


@pytest.fixture
def audit(tmp_path: Path) -> Partition:
    signing_key, mac_key = Ed25519PrivateKey.generate(), secrets.token_bytes(32)
    anchors = AnchorStore(Database(f"sqlite:///{tmp_path}/anchors.sqlite3"))
    stage = ChainAudit(TOPICS, MemoryLog(TOPICS.specs()), signing_key, "hub-signing/test", mac_key, anchors)
    stage.heads = {0: (-1, GENESIS)}  # an empty partition, restored: handle() needs no broker
    return Partition(stage, anchors, signing_key, mac_key)


def test_an_intact_chain_verifies(audit: Partition) -> None:
    for size in (3, 5, 2):
        audit.batch(size)
    report = audit.verify()
    assert report.ok, report.problem
    assert (report.entries, report.checkpoints, report.last_seq, report.anchor_seq) == (10, 3, 9, 9)
    assert (report.foreign, report.unanchored, report.legacy_entries) == ([], [], 0)


def test_a_forged_entry_with_the_next_seq_and_prev_hash_at_the_tail_is_reported(audit: Partition) -> None:
    audit.batch(4)
    forged = audit.forge()  # seq 4, prev_hash = seq 3's hash, a correct entry hash: only the MAC is missing
    report = audit.verify()
    assert not report.ok
    assert report.foreign_offsets == [forged]
    assert (report.entries, report.last_seq, report.broken) == (4, 3, None)  # the real chain is whole
    assert report.problem == (
        f"1 record(s) not written by the chaining stage: offset {forged} (an entry without a MAC)"
    )


def test_a_forged_mac_does_not_pass(audit: Partition) -> None:
    audit.batch(2)
    forged = audit.forge(mac=secrets.token_bytes(32))
    report = audit.verify()
    assert report.foreign_offsets == [forged] and "MAC does not verify" in str(report.problem)


def test_an_authentic_looking_version_1_entry_without_a_mac_is_reported(audit: Partition) -> None:
    audit.batch(3)
    forged = audit.forge(schema=AUDIT_RECORD_V1)  # as the chaining stage wrote entries before MACs
    assert "mac" not in dict(audit.records())[forged]  # type: ignore[operator]
    report = audit.verify()
    assert not report.ok and report.foreign_offsets == [forged] and report.entries == 3


def test_the_authentic_chain_verifies_around_a_forged_entry_in_the_middle(audit: Partition) -> None:
    audit.batch(3)
    forged = audit.forge()  # takes seq 3 ...
    audit.batch(4)  # ... but the running stage chains on from its own head: its seq 3 follows the forgery
    audit.batch(2)
    report = audit.verify()
    assert report.foreign_offsets == [forged]
    assert (report.entries, report.last_seq, report.checkpoints, report.broken, report.unanchored) == (
        9,
        8,
        3,
        None,
        [],
    )
    assert not report.ok


def test_a_forged_entry_does_not_hide_a_later_break(audit: Partition) -> None:
    audit.batch(3)
    forged = audit.forge()
    later = audit.batch(4)
    deleted = later[1]  # the real seq 4
    audit.log = [(o, v) for o, v in audit.log if o != deleted]
    report = audit.verify()
    assert report.foreign_offsets == [forged]
    assert report.broken == f"offset {later[2]}: entry seq 5 where seq 4 was expected (entries before it were deleted)"


def test_garbage_and_records_of_another_partition_are_foreign_not_a_break(audit: Partition) -> None:
    audit.batch(2)
    garbage = audit.write(b"\x00\x00\x00\x00\x08not avro")
    moved = audit.forge(partition=1)
    audit.batch(2)
    report = audit.verify()
    assert [(f.offset, f.reason) for f in report.foreign] == [
        (garbage, "not a readable audit record"),
        (moved, "claims partition 1"),
    ]
    assert report.entries == 4 and report.broken is None


def test_copies_of_real_records_are_reported_and_not_counted(audit: Partition) -> None:
    first = audit.batch(3)
    audit.batch(1)
    copy = audit.write(dict(audit.log)[first[1]])  # authentic bytes, MAC and all, appended again
    checkpoint = audit.write(dict(audit.log)[first[-1]])  # and the signed checkpoint of seq 2
    report = audit.verify()
    assert [(f.offset, f.reason) for f in report.foreign] == [
        (copy, "a copy of the entry at seq 1"),
        (checkpoint, "a copy of the checkpoint at seq 2"),
    ]
    assert (report.entries, report.checkpoints) == (4, 2)


def test_entries_no_signed_checkpoint_covers_are_reported_unanchored(audit: Partition) -> None:
    audit.batch(3)
    # Entries with valid MACs but no checkpoint: never so from a committed batch, whose checkpoint is
    # in its own transaction. Here the stage's batch is written without its checkpoint.
    written = audit.batch(2, commit=False)
    audit.log = [(o, v) for o, v in audit.log if o != written[-1]]
    report = audit.verify()
    assert report.unanchored == [3, 4] and report.foreign == [] and report.broken is None
    assert report.problem == "seq 3-4: not covered by any signed checkpoint or the anchor (unanchored)"


def test_a_forged_checkpoint_sealing_a_forged_entry_is_foreign_too(audit: Partition) -> None:
    audit.batch(2)
    event = CODEC.encode(AUDIT_EVENT, audit_event("decision", "x", "shared"))
    seq, head = audit.head()
    record = entry(seq + 1, head, event)
    record["mac"] = b"\x00" * 32
    forged = audit.write(CODEC.encode("tiphub.AuditRecord", record))
    bad = audit.write(
        CODEC.encode(
            "tiphub.AuditRecord",
            {**record, "event": None, "prev_hash": b"", "mac": None, "checkpoint_signature": b"\x01" * 64},
        )
    )
    report = audit.verify()
    assert report.foreign_offsets == [forged, bad]
    assert "a checkpoint at seq 2 with an invalid signature" in str(report.problem)


# -- chains written before entries carried MACs ----------------------------------------------


def legacy_chain(audit: Partition, batches: list[int]) -> None:
    """tip.audit as the chaining stage wrote it with AuditRecord version 1: entries without a MAC,
    each batch sealed by a checkpoint signed by the hub."""
    seq, prev = -1, GENESIS
    for size in batches:
        for _ in range(size):
            seq, event = seq + 1, CODEC.encode(AUDIT_EVENT, audit_event("decision", "decide_sharing", "shared"))
            audit.write(CODEC.encode_with(AUDIT_RECORD_V1, entry(seq, prev, event)))
            prev = entry_hash(prev, seq, event)
        signature = crypto.sign(audit.signing_key, checkpoint_statement(TOPICS.audit, 0, seq, prev))
        checkpoint = {**entry(seq, b"", b""), "hash": prev, "event": None, "checkpoint_signature": signature}
        audit.write(CODEC.encode_with(AUDIT_RECORD_V1, checkpoint))
        audit.anchors.advance(Anchor(TOPICS.audit, 0, seq, prev, signature))
        audit.next_offset += 1


def test_a_chain_from_before_entry_macs_still_verifies_on_its_signed_checkpoints(audit: Partition) -> None:
    legacy_chain(audit, [3, 2])
    report = audit.verify()
    assert report.ok, report.problem
    assert (report.entries, report.legacy_entries) == (5, 5)


def test_a_forged_entry_after_the_last_legacy_checkpoint_is_reported_and_the_macd_chain_continues(
    audit: Partition,
) -> None:
    legacy_chain(audit, [3, 2])
    forged = audit.forge(schema=AUDIT_RECORD_V1)  # before the upgrade: unsealed, so never vouched for
    head = restored(audit, anchor=audit.anchors.all(TOPICS.audit)[0])  # the upgraded stage starts
    assert head is not None and head.seq == 4 and [f.offset for f in head.foreign] == [forged]
    audit.stage.heads = {0: (head.seq, head.hash)}
    audit.batch(3)
    report = audit.verify()
    assert report.foreign_offsets == [forged]
    assert (report.entries, report.legacy_entries, report.last_seq, report.broken) == (8, 5, 7, None)
    no_mac_after_macs = audit.forge(schema=AUDIT_RECORD_V1)
    assert audit.verify().foreign_offsets == [forged, no_mac_after_macs]


# -- restoring the head at assignment --------------------------------------------------------


def restored(
    audit: Partition,
    records: list[tuple[int, dict[str, Any] | None]] | None = None,
    *,
    from_start: bool = True,
    anchor: Anchor | None = None,
) -> RestoredHead | None:
    public = audit.signing_key.public_key()
    records = audit.records() if records is None else records
    return restore_head(TOPICS.audit, 0, records, audit.mac_key, public, anchor, from_start=from_start)


def test_the_head_is_the_last_authentic_entry_never_a_forged_tail(audit: Partition) -> None:
    audit.batch(3)
    real = audit.head()
    forged = [audit.forge(), audit.forge(mac=b"\x11" * 32)]
    head = restored(audit, anchor=audit.anchors.all(TOPICS.audit)[0])
    assert head is not None and (head.seq, head.hash) == real
    assert [f.offset for f in head.foreign] == forged


def test_copies_of_old_entries_appended_after_the_head_never_become_it(audit: Partition) -> None:
    first = audit.batch(3)
    audit.batch(2)
    real = audit.head()
    for _ in range(3):
        audit.write(dict(audit.log)[first[2]])  # seq 2, MAC and all
    head = restored(audit)
    assert head is not None and (head.seq, head.hash) == real and len(head.foreign) == 3


def test_a_tail_read_that_holds_no_head_at_the_anchor_asks_for_more(audit: Partition) -> None:
    first = audit.batch(3)
    anchor = audit.anchors.all(TOPICS.audit)[0]
    copies = [audit.write(dict(audit.log)[first[0]]) for _ in range(3)]  # seq 0 again, filling the tail read
    tail = [(o, r) for o, r in audit.records() if o >= copies[0]]
    assert restored(audit, tail, from_start=False, anchor=anchor) is None  # read further back
    with pytest.raises(AuditHeadContradicted, match="the signed anchor is at seq 2"):
        restored(audit, tail, from_start=True, anchor=anchor)  # as if all before them were gone
    head = restored(audit, anchor=anchor)  # the whole partition
    assert head is not None and head.seq == 2 and [f.offset for f in head.foreign] == copies


def test_a_partition_with_only_foreign_records_starts_at_genesis(audit: Partition) -> None:
    garbage = audit.write(b"nonsense")
    head = restored(audit)
    assert head is not None and (head.seq, head.hash) == (-1, GENESIS) and [f.offset for f in head.foreign] == [garbage]
