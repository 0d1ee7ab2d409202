"""chain_audit: tip.audit.intake -> tip.audit, one hash chain per partition, exactly once.

The only writer of tip.audit. Each intake partition is chained into the same partition of
tip.audit; the chain head is rebuilt from that partition's tail at assignment. Every committed
batch ends with a checkpoint signed by the hub, and the same signed head is stored outside Kafka
(the anchor) once the transaction has committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.codec import CodecError, WireCodec
from streams.feeds import settled_end_offsets
from streams.topics import Topics
from streams.transactional import Output
from tiphub import crypto
from tiphub.audit import GENESIS, Anchor, AnchorStore, checkpoint_statement, entry_hash

log = logging.getLogger(__name__)
RECORD = "tiphub.AuditRecord"


class ChainAudit:
    def __init__(
        self,
        topics: Topics,
        bootstrap: str,
        signing_key: Ed25519PrivateKey,
        signing_key_id: str,
        anchors: AnchorStore,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.topics = topics
        self.bootstrap = bootstrap
        self.options = client_options or {}
        self.codec = WireCodec()
        self.signing_key = signing_key
        self.signing_key_id = signing_key_id
        self.anchors = anchors
        self.heads: dict[int, tuple[int, bytes]] = {}  # partition -> (last seq, last hash)
        self._pending: dict[int, tuple[int, bytes]] = {}
        self._pending_anchors: list[Anchor] = []
        self._lock = asyncio.Lock()

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        await self._ensure_heads({tp.partition for tp in partitions})

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.heads.pop(tp.partition, None)

    async def _ensure_heads(self, partitions: set[int]) -> None:
        async with self._lock:
            missing = partitions - self.heads.keys()
            if missing:
                self.heads.update(await self._read_heads(sorted(missing)))
                log.info("audit chain heads restored for partitions %s", sorted(missing))

    async def _read_heads(self, partitions: list[int]) -> dict[int, tuple[int, bytes]]:
        """The last entry of each tip.audit partition, reading back from its end; one consumer for all."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, isolation_level="read_committed", **self.options
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topics.audit, p) for p in partitions]
            consumer.assign(tps)
            ends = await settled_end_offsets(self.bootstrap, consumer, tps, self.options)
            return {tp.partition: await self._read_head(consumer, tp, ends[tp]) for tp in tps}
        finally:
            await consumer.stop()

    async def _read_head(self, consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> tuple[int, bytes]:
        step = 256
        start = end
        while start > 0:
            start = max(0, start - step)
            consumer.seek(tp, start)
            head: tuple[int, bytes] | None = None
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=300)
                for record in batch.get(tp, []):
                    _, value = self.codec.decode(record.value, expect=RECORD)
                    if value["event"] is not None:
                        head = (value["seq"], value["hash"])
            if head is not None:
                return head
            step *= 4
        return (-1, GENESIS)

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        await self._ensure_heads({r.partition for r in records})
        now = datetime.now(UTC)
        self._pending, self._pending_anchors = {}, []
        outputs: list[Output] = []
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
            seq += 1
            digest = entry_hash(prev, seq, record.value)
            outputs.append(self._record(partition, seq, digest, now, prev_hash=prev, event=record.value))
            self._pending[partition] = (seq, digest)
        for partition, (seq, digest) in self._pending.items():
            signature = crypto.sign(self.signing_key, checkpoint_statement(self.topics.audit, partition, seq, digest))
            outputs.append(self._record(partition, seq, digest, now, signature=signature))
            self._pending_anchors.append(Anchor(self.topics.audit, partition, seq, digest, signature))
        return outputs

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
    ) -> Output:
        """A chain entry (with its event) or a checkpoint (with the hub's signature) of one partition."""
        return Output(
            self.topics.audit,
            None,
            self.codec.encode(
                RECORD,
                {
                    "partition": partition,
                    "seq": seq,
                    "prev_hash": prev_hash,
                    "hash": digest,
                    "event": event,
                    "checkpoint_signature": signature,
                    "signing_key_id": self.signing_key_id if signature else None,
                    "written_at": now,
                },
            ),
            partition=partition,
        )

    def committed(self) -> None:
        self.heads.update(self._pending)
        for anchor in self._pending_anchors:  # only once the chain it seals is really on the topic
            self.anchors.advance(anchor)
        self._pending, self._pending_anchors = {}, []

    def aborted(self) -> None:
        self._pending, self._pending_anchors = {}, []

    async def close(self) -> None:
        pass
