"""The tamper-evident audit: a hash chain per partition of tip.audit, signed checkpoints, an anchor.

entry.hash = SHA-256(prev_hash || seq as 8 bytes big-endian || event bytes); the first prev_hash is
32 zero bytes. After every committed batch the chaining stage writes a checkpoint record (the hub's
Ed25519 signature over the partition's head) and stores the same signed head outside Kafka (the
anchor). Verification walks each chain and compares its end with the anchor, so an altered,
deleted, reordered or truncated entry is found and named.
"""

from __future__ import annotations

import hashlib
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tiphub import crypto
from tiphub.database import Database

GENESIS = b"\x00" * 32


def entry_hash(prev_hash: bytes, seq: int, event: bytes) -> bytes:
    return hashlib.sha256(prev_hash + struct.pack(">Q", seq) + event).digest()


def checkpoint_statement(topic: str, partition: int, seq: int, head: bytes) -> bytes:
    return f"tiphub/audit-checkpoint/v1|{topic}|{partition}|{seq}|{head.hex()}".encode()


@dataclass(frozen=True)
class Anchor:
    topic: str
    partition: int
    seq: int
    head: bytes
    signature: bytes


class AnchorStore:
    """The latest signed head of every audit partition, kept outside Kafka."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.execute(
            f"""CREATE TABLE IF NOT EXISTS audit_anchors (
                topic TEXT NOT NULL, partition_id INTEGER NOT NULL, seq BIGINT NOT NULL,
                head {db.blob()} NOT NULL, signature {db.blob()} NOT NULL, written_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (topic, partition_id))"""
        )

    def advance(self, anchor: Anchor) -> None:
        """Move the anchor forward; never back (a late writer cannot un-anchor newer entries)."""
        self.db.execute(
            "INSERT INTO audit_anchors (topic, partition_id, seq, head, signature, written_at) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (topic, partition_id) DO UPDATE SET seq = excluded.seq, head = excluded.head, "
            "signature = excluded.signature, written_at = excluded.written_at WHERE excluded.seq > audit_anchors.seq",
            (anchor.topic, anchor.partition, anchor.seq, anchor.head, anchor.signature, time.time()),
        )

    def all(self, topic: str) -> dict[int, Anchor]:
        rows = self.db.query("SELECT partition_id, seq, head, signature FROM audit_anchors WHERE topic = ?", (topic,))
        return {r[0]: Anchor(topic, r[0], r[1], bytes(r[2]), bytes(r[3])) for r in rows}


@dataclass
class PartitionReport:
    partition: int
    entries: int = 0
    checkpoints: int = 0
    last_seq: int = -1
    anchor_seq: int | None = None
    problem: str | None = None

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
    records: list[tuple[int, dict[str, Any] | None]],
    anchor: Anchor | None,
    hub_public: Ed25519PublicKey,
) -> PartitionReport:
    """Walk one partition's records (offset, decoded AuditRecord or None if unreadable) in offset order.

    Stops at the first broken link and names it.
    """
    report = PartitionReport(partition, anchor_seq=anchor.seq if anchor else None)
    expected, prev = 0, GENESIS
    heads: dict[int, bytes] = {}

    def broken(text: str) -> PartitionReport:
        report.problem = text
        return report

    for offset, record in records:
        if record is None:
            return broken(f"offset {offset}: not a readable audit record (altered bytes)")
        if record["partition"] != partition:
            return broken(f"offset {offset}: record claims partition {record['partition']} (moved)")
        if record["event"] is not None:
            seq = record["seq"]
            if seq != expected:
                kind = "entries before it were deleted" if seq > expected else "entries were reordered or repeated"
                return broken(f"offset {offset}: entry seq {seq} where seq {expected} was expected ({kind})")
            if record["prev_hash"] != prev:
                return broken(f"seq {seq}: does not link to seq {seq - 1} (prev_hash differs)")
            if entry_hash(prev, seq, record["event"]) != record["hash"]:
                return broken(f"seq {seq}: content does not match its hash (altered)")
            prev, expected = record["hash"], seq + 1
            heads[seq] = prev
            report.entries += 1
        else:
            statement = checkpoint_statement(topic, partition, record["seq"], record["hash"])
            signature = record["checkpoint_signature"] or b""
            if not crypto.verify(hub_public, signature, statement):
                return broken(f"offset {offset}: checkpoint at seq {record['seq']} has an invalid signature")
            if heads.get(record["seq"]) != record["hash"]:
                return broken(f"offset {offset}: checkpoint at seq {record['seq']} does not match the chain")
            report.checkpoints += 1
    report.last_seq = expected - 1
    if anchor is not None:
        if not crypto.verify(
            hub_public, anchor.signature, checkpoint_statement(topic, partition, anchor.seq, anchor.head)
        ):
            return broken("the anchor's signature is invalid")
        if report.last_seq < anchor.seq:
            return broken(
                f"chain ends at seq {report.last_seq} but the signed anchor is at seq {anchor.seq} (truncated)"
            )
        if heads.get(anchor.seq) != anchor.head:
            return broken(f"seq {anchor.seq}: differs from the signed anchor (rewritten)")
    return report
