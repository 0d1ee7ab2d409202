"""Reads tip.audit and the anchors, and verifies every partition's chain."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schemas.codec import CodecError, WireCodec
from tiphub.audit import Anchor, VerifyReport, verify_partition

RawRecord = tuple[int, bytes | None]


async def read_partitions(
    bootstrap: str, topic: str, partitions: int, client_options: dict[str, Any] | None = None
) -> dict[int, list[RawRecord]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **(client_options or {}),
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict[int, list[RawRecord]] = {p: [] for p in range(partitions)}
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=300)
            for tp, records in batch.items():
                out[tp.partition].extend((r.offset, r.value) for r in records)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


def verify_records(
    topic: str, raw: dict[int, list[RawRecord]], anchors: dict[int, Anchor], hub_public: Ed25519PublicKey
) -> VerifyReport:
    codec = WireCodec()
    report = VerifyReport(topic)
    for partition in sorted(set(raw) | set(anchors)):
        decoded: list[tuple[int, dict[str, Any] | None]] = []
        for offset, value in raw.get(partition, []):
            try:
                decoded.append((offset, codec.decode(value, expect="tiphub.AuditRecord")[1]))
            except CodecError:
                decoded.append((offset, None))
        report.partitions.append(verify_partition(topic, partition, decoded, anchors.get(partition), hub_public))
    return report
