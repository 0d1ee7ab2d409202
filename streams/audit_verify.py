"""Reads tip.audit and the anchors, and verifies every partition's chain."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schemas.codec import CodecError, WireCodec
from streams.feeds import RawRecord
from tiphub.audit import Anchor, VerifyReport, verify_partition


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
