"""Auditor endpoints: the chained audit trail, a verification of its chains, and who saw a person."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from domain.read_models import AuditFilter
from gateway.deps import AuditorCaller, StateDep
from gateway.errors import NotVisible
from streams.audit_events import audit_detail
from streams.audit_trail import verify_audit_trail

router = APIRouter(tags=["audit"])


@router.get("/v1/audit")
async def audit(
    caller: AuditorCaller,
    state: StateDep,
    after: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    kind: Annotated[str | None, Query(max_length=64, description="decision, disclosure, denial, ...")] = None,
    actor: Annotated[str | None, Query(max_length=256, description="Who acted, or its beginning: analyst:")] = None,
    recipient: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Annotated[str | None, Query(max_length=128)] = None,
    item: Annotated[str | None, Query(max_length=128, description="The item acted on: a report, signal, ...")] = None,
    since: Annotated[datetime | None, Query(description="At or after this time.")] = None,
    until: Annotated[datetime | None, Query(description="Before this time.")] = None,
) -> dict[str, Any]:
    """Audit events in chain order per partition, oldest first across partitions, with a cursor: the
    entries the chaining stage wrote (records anyone else wrote to tip.audit, and copies of real entries,
    are not events: /v1/audit/verify lists them). Filters narrow it; a cursor goes on under the filter it
    was issued for."""
    where = AuditFilter(kind, actor, recipient, outcome, item, _utc(since), _utc(until))
    feed = "audit|" + json.dumps([kind, actor, recipient, outcome, item, str(since), str(until)])
    cursors = state.cursors
    position = cursors.open(feed, "auditors", after, state.topics.partitions)
    found, position = await asyncio.to_thread(state.views.audit_events, position, limit, where)
    events = [{**event, "detail": audit_detail(event), "partition": partition} for partition, event in found]
    return {"events": events, "next": cursors.seal(feed, "auditors", position)}


def _utc(moment: datetime | None) -> datetime | None:
    """A time given without a zone is UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@router.get("/v1/audit/verify")
async def verify(caller: AuditorCaller, state: StateDep) -> dict[str, Any]:
    """Walk every partition's hash chain past records the chaining stage did not write (listed in
    `foreign`), check it against the latest signed anchor, and list entries no checkpoint covers."""
    keys = state.keys
    report = await verify_audit_trail(
        state.topic_io, state.topics, state.anchors, keys.hub_signing_public, keys.audit_mac
    )
    return {
        "ok": report.ok,
        "partitions": [
            {
                "partition": p.partition,
                "entries": p.entries,
                "checkpoints": p.checkpoints,
                "last_seq": p.last_seq,
                "anchor_seq": p.anchor_seq,
                "problem": p.problem,
                "broken": p.broken,
                "foreign_offsets": p.foreign_offsets,
                "foreign": [{"offset": f.offset, "reason": f.reason} for f in p.foreign],
                "unanchored": p.unanchored,
                "legacy_entries": p.legacy_entries,
            }
            for p in report.partitions
        ],
    }


@router.get("/v1/audit/subjects/{subject_token}")
async def who_saw(subject_token: str, caller: AuditorCaller, state: StateDep) -> Any:
    """Every decision and disclosure that concerned the person with this linkage token."""
    views = state.views
    keys = views.subject_keys(subject_token)
    reports = views.reports_naming(keys)
    if not keys:
        raise NotVisible("no accepted report names a person with this token")
    seen = []
    mentioning = await asyncio.to_thread(views.audit_mentioning, keys | reports)  # by index, oldest first
    for event in mentioning:
        detail = audit_detail(event)
        mentioned = set(event["subject_refs"]) & keys or event["item_id"] in reports
        mentioned = mentioned or bool(reports & set(detail.get("reports", [])))
        if event["kind"] == "decision" and not detail.get("allowed"):
            continue  # decided not to share: nobody saw it through this decision
        if mentioned and event["kind"] in ("decision", "disclosure", "erasure"):
            seen.append(
                {
                    "at": event["at"],
                    "kind": event["kind"],
                    "actor": event["actor"],
                    "recipient": event["recipient"],
                    "outcome": event["outcome"],
                    "item_id": event["item_id"],
                }
            )
    await state.audit.disclosed(caller, "audit-subject", {"subject_keys": sorted(keys)})
    return {"subject_keys": sorted(keys), "reports": sorted(reports), "seen_by": seen}
