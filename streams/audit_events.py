"""Building audit events: every writer uses this, so no event can carry a field it should not."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from domain.log import Output
from schemas.codec import WireCodec

AUDIT_EVENT = "tiphub.AuditEvent"


def audit_event(
    kind: str,
    actor: str,
    outcome: str,
    *,
    item_id: str | None = None,
    recipient: str | None = None,
    subject_refs: list[str] | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "kind": kind,
        "at": at or datetime.now(UTC),
        "actor": actor,
        "item_id": item_id,
        "recipient": recipient,
        "subject_refs": subject_refs or [],
        "outcome": outcome,
        "detail": json.dumps(detail or {}, sort_keys=True, default=str),
    }


def audit_output(codec: WireCodec, topic: str, event: dict[str, Any]) -> Output:
    return Output(topic, event["event_id"].encode(), codec.encode(AUDIT_EVENT, event))


def ingest_denial(rejection: dict[str, Any], at: datetime, claimed_agency: str | None = None) -> dict[str, Any]:
    """The audit event of a submission refused because it claimed an identity or a report not its own. The
    actor is the agency only where its signature was verified; otherwise `unverified`, with the claim."""
    return audit_event(
        "denial",
        f"agency:{rejection['source_agency'] or 'unverified'}",
        "rejected",
        item_id=rejection["report_id"],
        at=at,
        detail={
            "reason": rejection["reason"],
            "field": rejection["field"],
            "claimed_agency": claimed_agency or rejection["source_agency"],
            "source": f"{rejection['source_topic']}:{rejection['source_partition']}:{rejection['source_offset']}",
        },
    )


def audit_detail(event: dict[str, Any]) -> dict[str, Any]:
    """An AuditEvent's detail as an object: whoever may write the audit intake may write any text there."""
    try:
        detail = json.loads(event["detail"] or "{}")
    except ValueError:
        return {}
    return detail if isinstance(detail, dict) else {}
