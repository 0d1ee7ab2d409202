"""Agencies over HTTP: publish a report, follow its status, read the agency's own rejections.

The gateway never holds an agency's private key. It seals the report for the hub like any
publisher and signs the envelope with its own relay key, naming the authenticated publisher
(`subject@AGENCY`); the accept stage trusts the relay key for that agency only.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from domain.crypto import public_bytes
from gateway.deps import PublisherCaller, StateDep
from gateway.errors import NotPermitted, NotVisible
from gateway.links import report_links, responding
from gateway.security import invalid
from producers.publisher import seal_report
from schemas.codec import WireCodec
from schemas.convert import ReportValidationError, report_from_json
from schemas.envelope import SUBMITTED

CODEC = WireCodec()
EPOCH_SHIFT = 1 << 62  # microseconds: a time before 1970 stays above zero in a cursor (unsigned)

router = APIRouter(tags=["agencies"])


@router.post("/v1/reports", status_code=202, responses=responding(202, "On the submissions topic.", report_links()))
async def publish(
    caller: PublisherCaller,
    state: StateDep,
    report: Annotated[dict[str, Any], Body(description="One IndicatorReport, JSON form (CONTRACT section 2).")],
) -> Any:
    """Publish one report as the caller's agency: 202 once on tip.reports.submitted; 422 lists every problem."""
    claimed = report.get("source_agency")
    if claimed != caller.agency:
        message = "source_agency: a publisher publishes for their own agency"
        raise NotPermitted("other_agency", message)
    try:
        record = report_from_json(report)
    except ReportValidationError as exc:
        raise invalid(*((("body", *e.path.split(".")), e.message, e.code) for e in exc.errors)) from None
    keys = state.keys
    hub_key_id, hub_public = state.envelope_keys.current()
    envelope = seal_report(
        record,
        agency_key=keys.relay,
        signing_key_id=keys.relay_key_id,
        hub_public=hub_public,
        hub_key_id=hub_key_id,
        publisher=f"{caller.subject}@{caller.agency}",
    )
    await state.publisher.send(state.topics.submitted, record["report_id"].encode(), CODEC.encode(SUBMITTED, envelope))
    state.submitted[record["report_id"]] = caller.agency
    return {"report_id": record["report_id"], "status": "submitted"}


@router.get("/v1/hub/keys")
async def hub_keys(caller: PublisherCaller, state: StateDep) -> dict[str, Any]:
    """The hub's envelope keys to seal submissions for: this epoch's and the next one's (X25519, raw, base64).
    Each is destroyed a while after its epoch ends; an envelope sealed for a destroyed key is refused
    (`hub_key_retired`): fetch these again at least once an epoch."""
    offered = state.envelope_keys.offered()
    return {
        "epoch_s": state.settings.envelope_epoch_s,
        "keys": [
            {
                "key_id": key.key_id,
                "public_key": base64.b64encode(public_bytes(key.public_key)).decode(),
                "not_before": key.not_before,
                "not_after": key.not_after,
            }
            for key in offered
        ],
    }


@router.get("/v1/reports/{report_id}/status")
async def status(report_id: str, caller: PublisherCaller, state: StateDep) -> Any:
    """accepted; rejected with the reason and field; or submitted while the accept stage has not decided."""
    views = state.views
    accepted = views.header(report_id)
    if accepted is not None and accepted.agency == caller.agency:
        state.submitted.decided(report_id)
        return {"report_id": report_id, "status": "accepted"}
    rejected = views.rejection(caller.agency, report_id)
    if rejected is not None and (accepted is None or accepted.agency != caller.agency):
        state.submitted.decided(report_id)
        return {
            "report_id": report_id,
            "status": "rejected",
            "reason": rejected["reason"],
            "field": rejected["field"],
            "detail": rejected["detail"],
        }
    if state.submitted.get(report_id) == caller.agency:
        return {"report_id": report_id, "status": "submitted"}
    raise NotVisible("no report with this id from your agency")


@router.get("/v1/reports")
async def submissions(
    caller: PublisherCaller,
    state: StateDep,
    after: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """The caller's agency's accepted reports, by when they were observed (then by id), each with whether it has
    since been retracted (its rejections: /v1/reports/rejected)."""
    views, cursors, agency = state.views, state.cursors, caller.agency or ""
    # The cursor holds the last report's (observed, id): a UUID's two halves, and the time moved above zero.
    held = cursors.open("submissions", agency, after, 3)
    position = (held[0] - EPOCH_SHIFT, str(uuid.UUID(int=held[1] << 64 | held[2]))) if any(held) else None

    def page() -> tuple[list[dict[str, Any]], Any]:
        found, last = views.submissions(agency, position, limit)
        return [{**i, "status": "retracted" if views.retracted(i["report_id"]) else "accepted"} for i in found], last

    out, last = await asyncio.to_thread(page)  # off the event loop: a query per report on PostgreSQL
    if last is None:  # nothing yet: start from the beginning next time
        return {"reports": out, "next": after or cursors.seal("submissions", agency, [0, 0, 0])}
    number = uuid.UUID(last[1]).int
    cursor = cursors.seal("submissions", agency, [last[0] + EPOCH_SHIFT, number >> 64, number & ((1 << 64) - 1)])
    return {"reports": out, "next": cursor}


@router.get("/v1/reports/rejected")
async def rejected(
    caller: PublisherCaller,
    state: StateDep,
    after: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Rejections of submissions that claimed the caller's agency, in log order."""
    views, cursors, agency = state.views, state.cursors, caller.agency or ""
    position = cursors.open("rejected", agency, after, state.topics.partitions)
    found, position = await asyncio.to_thread(views.rejections, agency, position, limit)
    out = [{k: value[k] for k in ("report_id", "reason", "field", "detail", "rejected_at")} for value in found]
    return {"rejected": out, "next": cursors.seal("rejected", agency, position)}
