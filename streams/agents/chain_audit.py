"""chain_audit: tip.audit.intake -> tip.audit, one hash chain per partition, exactly once.

The only legitimate writer of tip.audit. Each intake partition is chained into the same partition
of tip.audit, each entry with a MAC under the hub's audit MAC key. At assignment the head is rebuilt
from that partition's tail: the authentic entry with the highest seq that the anchor agrees with,
never a record another writer appended (those are reported into the chain as an `integrity` event).
Every committed batch ends with a checkpoint signed by the hub, and the same signed head is stored
outside Kafka (the anchor) once the transaction has committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain import crypto
from domain.audit_chain import (
    Anchor,
    RestoredHead,
    checkpoint_statement,
    entry_hash,
    entry_mac,
    foreign_records_detail,
    restore_head,
)
from domain.log import LogReader, Output, Restore, TopicPartition
from domain.ports import AuditAnchors
from schemas.codec import CodecError, WireCodec
from streams.audit_events import AUDIT_EVENT, audit_event
from streams.audit_verify import AUDIT_RECORD, decode_audit_records
from streams.stage_context import StageContext
from streams.topics import Topics

log = logging.getLogger(__name__)


class ChainAudit:
    """BatchHandler of the chaining stage: `log` gives back the tail of each tip.audit partition it is
    assigned, to rebuild the chain's head from."""

    def __init__(
        self,
        topics: Topics,
        log: Restore,
        signing_key: Ed25519PrivateKey,
        signing_key_id: str,
        mac_key: bytes,
        anchors: AuditAnchors,
    ) -> None:
        self.topics = topics
        self.log = log
        self.codec = WireCodec()
        self.signing_key = signing_key
        self.hub_public = signing_key.public_key()
        self.signing_key_id = signing_key_id
        self.mac_key = mac_key
        self.anchors = anchors
        self.heads: dict[int, tuple[int, bytes]] = {}  # partition -> (last seq, last hash)
        self.integrity: dict[int, bytes] = {}  # partition -> an AuditEvent reporting foreign records, to chain
        self._pending: dict[int, tuple[int, bytes]] = {}
        self._reporting: set[int] = set()  # partitions whose integrity event is in the batch in flight
        self._pending_anchors: list[Anchor] = []
        self._lock = asyncio.Lock()

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        await self._ensure_heads({tp.partition for tp in partitions})

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.heads.pop(tp.partition, None)
            self.integrity.pop(tp.partition, None)  # the next owner finds the foreign records again

    async def _ensure_heads(self, partitions: set[int]) -> None:
        async with self._lock:
            missing = partitions - self.heads.keys()
            if missing:
                for partition, head in (await self._read_heads(sorted(missing))).items():
                    self.heads[partition] = (head.seq, head.hash)
                    if head.foreign:
                        self.integrity[partition] = self._report_foreign(partition, head)
                log.info("audit chain heads restored for partitions %s", sorted(missing))

    async def _read_heads(self, partitions: list[int]) -> dict[int, RestoredHead]:
        """The head of each tip.audit partition, reading back from its end; one reader for all."""
        tps = [TopicPartition(self.topics.audit, p) for p in partitions]
        async with self.log.reading() as reader:
            anchors = self.anchors.all(self.topics.audit)  # before the ends: an anchor never runs ahead of them
            ends = await reader.settled_ends(tps)
            log.info("audit chain heads: reading back from the ends %s", {tp.partition: ends[tp] for tp in tps})
            return {tp.partition: await self._read_head(reader, tp, ends[tp], anchors.get(tp.partition)) for tp in tps}

    async def _read_head(self, reader: LogReader, tp: TopicPartition, end: int, anchor: Anchor | None) -> RestoredHead:
        """Read back from the end in growing steps until the records read hold a head the anchor agrees with."""
        step = 256
        start = end
        while True:
            start = max(0, start - step)
            raw = [(record.offset, record.value) for record in await reader.read({tp: end}, start_at={tp: start})]
            records = decode_audit_records(self.codec, raw)
            head = restore_head(
                self.topics.audit,
                tp.partition,
                records,
                self.mac_key,
                self.hub_public,
                anchor,
                from_start=start == 0,
            )
            if head is not None:
                return head
            step *= 4

    def _report_foreign(self, partition: int, head: RestoredHead) -> bytes:
        """The AuditEvent that records, in the chain itself, what someone else wrote after the head."""
        detail = foreign_records_detail(head)
        log.warning(
            "tip.audit partition %s: %d record(s) after seq %d were not written by chain_audit and are not chained "
            "onto (offsets %s); reporting them in the chain",
            partition,
            len(head.foreign),
            head.seq,
            [f.offset for f in head.foreign[:20]],
        )
        event = audit_event("integrity", "chain_audit", "foreign_records", detail={"partition": partition, **detail})
        return self.codec.encode(AUDIT_EVENT, event)

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        await self._ensure_heads({r.partition for r in records})
        now = datetime.now(UTC)
        self._pending, self._pending_anchors, self._reporting = {}, [], set(self.integrity)
        outputs: list[Output] = []
        for partition, event in sorted(self.integrity.items()):  # in any batch: a quiet intake cannot hold it up
            seq, prev = self.heads[partition]
            outputs.append(self._entry(partition, seq + 1, prev, event, now))
            self._pending[partition] = (seq + 1, entry_hash(prev, seq + 1, event))
        for record in records:
            partition = record.partition
            seq, prev = self._pending.get(partition, self.heads[partition])
            try:
                self.codec.decode(record.value, expect="tiphub.AuditEvent")
            except CodecError as exc:
                log.warning(
                    "skipping an intake record that is not an AuditEvent (%s) at %s/%s",
                    exc.reason,
                    partition,
                    record.offset,
                )
                continue
            outputs.append(self._entry(partition, seq + 1, prev, record.value, now))
            self._pending[partition] = (seq + 1, entry_hash(prev, seq + 1, record.value))
        for partition, (seq, digest) in self._pending.items():
            signature = crypto.sign(self.signing_key, checkpoint_statement(self.topics.audit, partition, seq, digest))
            outputs.append(self._record(partition, seq, digest, now, signature=signature))
            self._pending_anchors.append(Anchor(self.topics.audit, partition, seq, digest, signature))
        return outputs

    def _entry(self, partition: int, seq: int, prev: bytes, event: bytes, now: datetime) -> Output:
        """A chain entry with its event, and its MAC: what no other writer of tip.audit can make."""
        digest = entry_hash(prev, seq, event)
        mac = entry_mac(self.mac_key, self.topics.audit, partition, seq, prev, digest)
        return self._record(partition, seq, digest, now, prev_hash=prev, event=event, mac=mac)

    def _record(
        self,
        partition: int,
        seq: int,
        digest: bytes,
        now: datetime,
        *,
        prev_hash: bytes = b"",
        event: bytes | None = None,
        signature: bytes | None = None,
        mac: bytes | None = None,
    ) -> Output:
        """A chain entry (with its event and MAC) or a checkpoint (with the hub's signature) of one partition."""
        return Output(
            self.topics.audit,
            None,
            self.codec.encode(
                AUDIT_RECORD,
                {
                    "partition": partition,
                    "seq": seq,
                    "prev_hash": prev_hash,
                    "hash": digest,
                    "event": event,
                    "checkpoint_signature": signature,
                    "signing_key_id": self.signing_key_id if signature else None,
                    "written_at": now,
                    "mac": mac,
                },
            ),
            partition=partition,
        )

    def committed(self) -> None:
        for partition in self._reporting:
            self.integrity.pop(partition, None)  # its report is in the chain now
        self.heads.update(self._pending)
        for anchor in self._pending_anchors:  # only once the chain it seals is really on the topic
            self.anchors.advance(anchor)
        self._pending, self._pending_anchors, self._reporting = {}, [], set()

    def aborted(self) -> None:
        self._pending, self._pending_anchors, self._reporting = {}, [], set()

    async def close(self) -> None:
        pass


def build(context: StageContext) -> ChainAudit:
    keys = context.provisions.audit_keys()
    return ChainAudit(
        context.topics, context.log, keys.signing_key, keys.signing_key_id, keys.mac_key, context.provisions.anchors()
    )
