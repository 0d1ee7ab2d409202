"""The audit trail as it stands: tip.audit read whole and every partition's chain checked (`tiphub audit verify`)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.audit_chain import VerifyReport
from domain.log import TopicIO
from domain.ports import AuditAnchors
from streams.audit_verify import verify_records
from streams.topics import Topics


async def verify_audit_trail(
    log: TopicIO,
    topics: Topics,
    anchors: AuditAnchors,
    hub_public: Ed25519PublicKey,
    mac_key: bytes,
) -> VerifyReport:
    """Every audit chain walked and checked against its latest signed anchor: the first broken link, the
    records the chaining stage did not write (foreign), the entries no checkpoint covers."""
    # The anchors before the topic: one read after it may already seal a batch committed since, and look
    # like a truncation.
    anchored = anchors.all(topics.audit)
    raw = await log.read_partitions(topics.audit, topics.partitions)
    return verify_records(topics.audit, raw, anchored, hub_public, mac_key)
