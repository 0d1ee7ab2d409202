"""The tamper-evident audit: a hash chain per partition of tip.audit, entry MACs, signed checkpoints, an anchor.

entry.hash = SHA-256(prev_hash || seq as 8 bytes big-endian || event bytes); the first prev_hash is
32 zero bytes. Each entry carries an HMAC-SHA256 under the hub's audit MAC key over its place in the
chain (`entry_statement`), so an entry that any other writer of tip.audit appends is told apart from
the chaining stage's, however well it links. After every committed batch the chaining stage writes a
checkpoint record (the hub's Ed25519 signature over the partition's head) and stores the same signed
head outside Kafka (the anchor). Verification walks each chain past foreign records, and compares
its end with the anchor, so an altered, deleted, reordered, truncated, foreign or unsealed entry is
found and named.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain import crypto

GENESIS = b"\x00" * 32
NO_MAC = "an entry without a MAC"

# (offset, decoded AuditRecord, or None when the value is not a readable AuditRecord), in offset order
AuditRecords = Iterable[tuple[int, dict[str, Any] | None]]


def entry_hash(prev_hash: bytes, seq: int, event: bytes) -> bytes:
    return hashlib.sha256(prev_hash + struct.pack(">Q", seq) + event).digest()


def checkpoint_statement(topic: str, partition: int, seq: int, head: bytes) -> bytes:
    return f"tiphub/audit-checkpoint/v1|{topic}|{partition}|{seq}|{head.hex()}".encode()


def entry_statement(topic: str, partition: int, seq: int, prev_hash: bytes, digest: bytes) -> bytes:
    """What an entry's MAC covers: its place in one partition's chain (the hash binds the event)."""
    return f"tiphub/audit-entry/v1|{topic}|{partition}|{seq}|{prev_hash.hex()}|{digest.hex()}".encode()


def entry_mac(mac_key: bytes, topic: str, partition: int, seq: int, prev_hash: bytes, digest: bytes) -> bytes:
    return hmac.digest(mac_key, entry_statement(topic, partition, seq, prev_hash, digest), "sha256")


def forgery(
    topic: str, partition: int, record: dict[str, Any] | None, mac_key: bytes, hub_public: Ed25519PublicKey
) -> str | None:
    """Why the chaining stage cannot have written `record` to this partition, or None when it can have:
    an entry's MAC or a checkpoint's signature verifies. Copies of such records are told apart by the walk."""
    if record is None:
        return "not a readable audit record"
    if record["partition"] != partition:
        return f"claims partition {record['partition']}"
    if record["event"] is None:
        statement = checkpoint_statement(topic, partition, record["seq"], record["hash"])
        if not crypto.verify(hub_public, record["checkpoint_signature"] or b"", statement):
            return f"a checkpoint at seq {record['seq']} with an invalid signature"
        return None
    mac = record.get("mac")  # absent from records written with AuditRecord version 1
    if mac is None:
        return NO_MAC
    expected = entry_mac(mac_key, topic, partition, record["seq"], record["prev_hash"], record["hash"])
    if not hmac.compare_digest(mac, expected):
        return "an entry whose MAC does not verify"
    return None


@dataclass(frozen=True)
class Anchor:
    topic: str
    partition: int
    seq: int
    head: bytes
    signature: bytes


@dataclass(frozen=True)
class ForeignRecord:
    """A record on tip.audit that the chaining stage did not write there."""

    offset: int
    reason: str


def _named(foreign: list[ForeignRecord], most: int = 10) -> str:
    shown = ", ".join(f"offset {f.offset} ({f.reason})" for f in foreign[:most])
    return shown + (f" and {len(foreign) - most} more" if len(foreign) > most else "")


def _legacy_end(judged: list[tuple[int, dict[str, Any] | None, str | None]]) -> int:
    """The offset up to which entries without a MAC are the partition's legacy prefix: chained before
    entries carried MACs, they are vouched for only by the hub's signed checkpoints. It is the offset
    of the highest signed checkpoint before the partition's first MAC'd entry; a copy of a checkpoint,
    appended later, is no higher, so it cannot stretch the prefix. -1 when there is none."""
    end, sealed = -1, -1
    for offset, record, reason in judged:
        if reason is not None or record is None:
            continue
        if record["event"] is not None:
            break  # the first authentic MAC'd entry: no entry after it goes without one
        if record["seq"] > sealed:
            end, sealed = offset, record["seq"]
    return end


def _judge(
    topic: str, partition: int, records: AuditRecords, mac_key: bytes, hub_public: Ed25519PublicKey
) -> list[tuple[int, dict[str, Any] | None, str | None]]:
    """Each record with the reason it is foreign (None: written by the chaining stage, or legacy)."""
    judged = [(offset, record, forgery(topic, partition, record, mac_key, hub_public)) for offset, record in records]
    legacy_end = _legacy_end(judged)
    return [(o, r, None if reason == NO_MAC and o < legacy_end else reason) for o, r, reason in judged]


def chained_entries(
    topic: str, partition: int, records: AuditRecords, mac_key: bytes, hub_public: Ed25519PublicKey
) -> list[tuple[int, dict[str, Any]]]:
    """(offset, entry) of every entry the chaining stage wrote to this partition, once each: what the
    audit trail may show. Foreign records and copies of real entries are left out."""
    seen: set[tuple[int, bytes]] = set()
    out = []
    for offset, record, reason in _judge(topic, partition, records, mac_key, hub_public):
        if reason is not None or record is None or record["event"] is None or unusable(record):
            continue
        if (record["seq"], record["hash"]) not in seen:
            seen.add((record["seq"], record["hash"]))
            out.append((offset, record))
    return out


@dataclass
class PartitionReport:
    """One partition's verification. `broken` names the first broken link of the authentic chain;
    `foreign` lists records the chaining stage did not write (skipped, so they hide nothing after them);
    `unanchored` lists seqs of authentic entries that no signed checkpoint or anchor covers."""

    partition: int
    entries: int = 0
    checkpoints: int = 0
    last_seq: int = -1
    anchor_seq: int | None = None
    legacy_entries: int = 0  # entries without a MAC, vouched for by the signed checkpoints alone
    broken: str | None = None
    foreign: list[ForeignRecord] = field(default_factory=list)
    unanchored: list[int] = field(default_factory=list)

    @property
    def foreign_offsets(self) -> list[int]:
        return [f.offset for f in self.foreign]

    @property
    def problem(self) -> str | None:
        found = [self.broken] if self.broken else []
        if self.foreign:
            found.append(f"{len(self.foreign)} record(s) not written by the chaining stage: {_named(self.foreign)}")
        if self.unanchored:
            seqs = f"seq {self.unanchored[0]}" + (f"-{self.unanchored[-1]}" if len(self.unanchored) > 1 else "")
            found.append(f"{seqs}: not covered by any signed checkpoint or the anchor (unanchored)")
        return "; ".join(found) or None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass
class VerifyReport:
    topic: str
    partitions: list[PartitionReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.partitions)


def verify_partition(
    topic: str,
    partition: int,
    records: AuditRecords,
    anchor: Anchor | None,
    hub_public: Ed25519PublicKey,
    mac_key: bytes,
) -> PartitionReport:
    """Walk one partition's records in offset order.

    Foreign records are listed and skipped: the authentic chain is checked across them, so a forged
    record neither passes nor hides a later break. The walk names the first broken link of the
    authentic chain; after it, records are only judged foreign or not.
    """
    report = PartitionReport(partition, anchor_seq=anchor.seq if anchor else None)
    expected, prev, sealed = 0, GENESIS, -1
    heads: dict[int, bytes] = {}
    checkpointed: set[int] = set()

    for offset, record, reason in _judge(topic, partition, records, mac_key, hub_public):
        if reason is not None:
            report.foreign.append(ForeignRecord(offset, reason))
            continue
        assert record is not None  # an unreadable record is foreign
        if report.broken:
            continue
        seq = record["seq"]
        if record["event"] is None:
            if seq in checkpointed:  # the stage seals each head once
                report.foreign.append(ForeignRecord(offset, f"a copy of the checkpoint at seq {seq}"))
            elif heads.get(seq) != record["hash"]:
                report.broken = f"offset {offset}: checkpoint at seq {seq} does not match the chain"
            else:
                report.checkpoints += 1
                checkpointed.add(seq)
                sealed = max(sealed, seq)
            continue
        if seq < expected and heads.get(seq) == record["hash"]:
            # A copy of an entry already chained: authentic bytes, but appended by someone else.
            report.foreign.append(ForeignRecord(offset, f"a copy of the entry at seq {seq}"))
            continue
        if seq != expected:
            kind = "entries before it were deleted" if seq > expected else "entries were reordered or repeated"
            report.broken = f"offset {offset}: entry seq {seq} where seq {expected} was expected ({kind})"
        elif record["prev_hash"] != prev:
            report.broken = f"seq {seq}: does not link to seq {seq - 1} (prev_hash differs)"
        elif entry_hash(prev, seq, record["event"]) != record["hash"]:
            report.broken = f"seq {seq}: content does not match its hash (altered)"
        else:
            prev, expected = record["hash"], seq + 1
            heads[seq] = prev
            report.entries += 1
            if record.get("mac") is None:
                report.legacy_entries += 1
    report.last_seq = expected - 1
    if report.broken:
        return report
    if anchor is not None:
        if not crypto.verify(
            hub_public, anchor.signature, checkpoint_statement(topic, partition, anchor.seq, anchor.head)
        ):
            report.broken = "the anchor's signature is invalid"
        elif report.last_seq < anchor.seq:
            report.broken = (
                f"chain ends at seq {report.last_seq} but the signed anchor is at seq {anchor.seq} (truncated)"
            )
        elif heads.get(anchor.seq) != anchor.head:
            report.broken = f"seq {anchor.seq}: differs from the signed anchor (rewritten)"
        else:
            sealed = max(sealed, anchor.seq)
    if not report.broken:
        # Each batch's checkpoint is written in the batch's own transaction: an entry after the last
        # one was not written by a committed batch of the chaining stage.
        report.unanchored = list(range(sealed + 1, report.last_seq + 1))
    return report


class AuditHeadContradicted(RuntimeError):
    """The partition's authentic records disagree with its anchor or with each other: chaining onto
    any of them could hide records deleted from tip.audit, so the partition is not chained."""


@dataclass(frozen=True)
class RestoredHead:
    """Where the chaining stage continues a partition's chain, and what it found written after it."""

    seq: int
    hash: bytes
    foreign: tuple[ForeignRecord, ...] = ()


def restore_head(
    topic: str,
    partition: int,
    records: AuditRecords,
    mac_key: bytes,
    hub_public: Ed25519PublicKey,
    anchor: Anchor | None,
    *,
    from_start: bool,
) -> RestoredHead | None:
    """The head to chain onto, from a partition's last records (`from_start`: they begin at its start).

    The head is the authentic entry (or, on a legacy chain, signed checkpoint) with the highest seq;
    foreign records and copies never become it. None: these records hold no head at or past the
    anchor, so read further back. Raises AuditHeadContradicted when no head can be trusted.
    """
    judged = _judge(topic, partition, records, mac_key, hub_public)
    best: tuple[int, int, bytes] | None = None  # (position in judged, seq, hash)
    for position, (_, record, reason) in enumerate(judged):
        if reason is not None or record is None or unusable(record) or _legacy(record):
            continue  # a legacy entry is skipped: its checkpoint, which follows it, gives the same head
        if best is None or record["seq"] > best[1]:
            best = (position, record["seq"], record["hash"])
        elif record["seq"] == best[1] and record["hash"] != best[2]:
            raise AuditHeadContradicted(
                f"{topic}[{partition}]: two authentic records at seq {best[1]} with different hashes"
            )
    if best is None:
        if not from_start:
            return None
        if anchor is not None:
            raise AuditHeadContradicted(
                f"{topic}[{partition}]: no authentic entry, but the signed anchor is at seq {anchor.seq}"
            )
        return RestoredHead(-1, GENESIS, tuple(_foreign_after(judged, -1, GENESIS)))
    position, seq, digest = best
    if anchor is not None and seq < anchor.seq:
        if not from_start:
            return None
        raise AuditHeadContradicted(
            f"{topic}[{partition}]: the authentic chain ends at seq {seq}, the signed anchor is at seq {anchor.seq}"
        )
    if anchor is not None and seq == anchor.seq and digest != anchor.head:
        raise AuditHeadContradicted(f"{topic}[{partition}]: seq {seq} differs from the signed anchor")
    return RestoredHead(seq, digest, tuple(_foreign_after(judged[position + 1 :], seq, digest)))


def _legacy(record: dict[str, Any]) -> bool:
    return record["event"] is not None and record.get("mac") is None


def unusable(record: dict[str, Any]) -> str | None:
    """Why an entry whose MAC verifies still cannot be chained onto (its bytes were altered in storage)."""
    if (
        record["event"] is not None
        and entry_hash(record["prev_hash"], record["seq"], record["event"]) != record["hash"]
    ):
        return "an entry whose content does not match its hash"
    return None


def _foreign_after(
    judged: list[tuple[int, dict[str, Any] | None, str | None]], seq: int, digest: bytes
) -> list[ForeignRecord]:
    """Records after the head (seq, digest): only its own checkpoint is the chaining stage's there."""
    foreign = []
    for offset, record, reason in judged:
        if reason is None:
            assert record is not None  # an unreadable record always has a reason
            if record["event"] is None and (record["seq"], record["hash"]) == (seq, digest):
                continue
            kind = "entry" if record["event"] is not None else "checkpoint"
            reason = unusable(record) or f"a copy of the {kind} at seq {record['seq']}"
        foreign.append(ForeignRecord(offset, reason))
    return foreign


def foreign_records_detail(head: RestoredHead, most: int = 100) -> dict[str, Any]:
    """What the integrity audit event says about the foreign records found after a restored head."""
    return {
        "head_seq": head.seq,
        "count": len(head.foreign),
        "records": [{"offset": f.offset, "reason": f.reason} for f in head.foreign[:most]],
        "reasons": dict(Counter(f.reason for f in head.foreign)),
    }
