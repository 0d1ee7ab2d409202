"""Auditor endpoints: the chained audit trail, a verification of its chains, and who saw a person."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query

from domain.audit_chain import chained_entries
from gateway.deps import AuditorCaller, StateDep
from gateway.errors import NotVisible
from gateway.paging import log_page
from gateway.state import GatewayState
from schemas.codec import CodecError, WireCodec
from streams.audit_trail import verify_audit_trail
from streams.audit_verify import decode_audit_records

CODEC = WireCodec()

router = APIRouter(tags=["audit"])


async def trail(state: GatewayState) -> list[tuple[int, int, dict[str, Any]]]:
    """(partition, offset, event) of every event the chaining stage wrote, read from tip.audit now.

    Records anyone else wrote there (no valid MAC) and copies of real entries are left out, not
    shown as events: /v1/audit/verify lists them."""
    topics, keys = state.topics, state.keys
    raw = await state.topic_io.read_partitions(topics.audit, topics.partitions)
    out = []
    for partition, records in raw.items():
        decoded = decode_audit_records(CODEC, records)
        for offset, entry in chained_entries(topics.audit, partition, decoded, keys.audit_mac, keys.hub_signing_public):
            try:
                out.append((partition, offset, CODEC.decode(entry["event"], expect="tiphub.AuditEvent")[1]))
            except CodecError:
                continue
    return out


@router.get("/v1/audit")
async def audit(
    caller: AuditorCaller,
    state: StateDep,
    after: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Audit events in chain order per partition, with a cursor."""
    cursors = state.cursors
    position = cursors.open("audit", "auditors", after, state.topics.partitions)
    in_order = sorted(await trail(state), key=lambda t: (t[2]["at"], t[0], t[1]))
    events, position = log_page(
        in_order,
        position,
        limit,
        lambda partition, event: {**event, "detail": json.loads(event["detail"] or "{}"), "partition": partition},
    )
    return {"events": events, "next": cursors.seal("audit", "auditors", position)}


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
    keys = views.accepted.subject_keys_by_token.get(subject_token, set())
    reports = {r for key in keys for r in views.accepted.reports_by_subject_key.get(key, ())}
    if not keys:
        raise NotVisible("no accepted report names a person with this token")
    seen = []
    for _, _, event in await trail(state):
        detail = json.loads(event["detail"] or "{}")
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
