"""Reads tip.audit and the anchors, and verifies every partition's chain."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.audit_chain import Anchor, VerifyReport, verify_partition
from domain.log import RawRecord
from schemas.codec import CodecError, WireCodec

AUDIT_RECORD = "tiphub.AuditRecord"


def decode_audit_records(codec: WireCodec, raw: list[RawRecord]) -> list[tuple[int, dict[str, Any] | None]]:
    """(offset, AuditRecord) in offset order; None for a value that is not one (anyone may write garbage)."""
    decoded: list[tuple[int, dict[str, Any] | None]] = []
    for offset, value in raw:
        try:
            decoded.append((offset, codec.decode(value, expect=AUDIT_RECORD)[1]))
        except CodecError:
            decoded.append((offset, None))
    return decoded


def verify_records(
    topic: str,
    raw: dict[int, list[RawRecord]],
    anchors: dict[int, Anchor],
    hub_public: Ed25519PublicKey,
    mac_key: bytes,
) -> VerifyReport:
    """Every partition's chain checked against its anchor. Callers read the anchors before the topic:
    an anchor read after it may already seal a batch committed since, and look like a truncation."""
    codec = WireCodec()
    report = VerifyReport(topic)
    for partition in sorted(set(raw) | set(anchors)):
        records = decode_audit_records(codec, raw.get(partition, []))
        anchor = anchors.get(partition)
        report.partitions.append(verify_partition(topic, partition, records, anchor, hub_public, mac_key))
    return report
