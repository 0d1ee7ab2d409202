"""The release workflow over HTTP (gateway/summaries.py holds the rules) and the partners' pull."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from gateway.links import pending_links, responding, summary_links
from gateway.security import AuditSink, forbid, invalid, require
from gateway.summaries import ActionRefused, Summary, check_approve, check_consent, check_withdraw
from gateway.views import CursorError, HubViews, decode_cursor, encode_cursor
from policies.loader import AGREEMENTS_DIR, foreign_partners, load_directory
from policies.model import OriginatorAgreement
from schemas.codec import WireCodec
from tiphub.tokens import Caller

SUMMARY_EVENT = "tiphub.SummaryEvent"


class DraftRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently dropped

    signal_id: str = Field(min_length=1, max_length=64)
    partner: str = Field(min_length=1, max_length=32, description="The partner the summary is for, e.g. HSU-TH.")


def pre_authorised(directory: Any) -> dict[str, frozenset[str]]:
    """Per originator: partners its agreement in force today pre-authorises release to."""
    today = date.today()
    current: dict[str, OriginatorAgreement] = {}
    for agreement in load_directory(directory or AGREEMENTS_DIR):
        if isinstance(agreement, OriginatorAgreement) and agreement.valid_from <= today <= agreement.valid_until:
            held = current.get(agreement.originator)
            if held is None or agreement.version > held.version:
                current[agreement.originator] = agreement
    return {originator: a.pre_authorised_release for originator, a in current.items()}


def build_router(agreements_dir: Any) -> APIRouter:
    router = APIRouter(tags=["release"])
    codec = WireCodec()
    authorised = pre_authorised(agreements_dir)
    partners = foreign_partners(agreements_dir)

    async def emit(request: Request, caller: Caller, kind: str, summary: Summary) -> None:
        """Write one lifecycle event and its audit event; return once this gateway's tail has folded it."""
        views: HubViews = request.app.state.views
        drafted = kind == "drafted"
        event_id, actor = str(uuid.uuid4()), f"{caller.role}:{caller.subject}"
        event: dict[str, Any] = {
            "event_id": event_id,
            "summary_id": summary.summary_id,
            "kind": kind,
            "partner": summary.partner,
            "signal_id": summary.signal_id,
            "signal_version": summary.signal_version,
            "actor": actor,
            "actor_agency": caller.agency,
            "at": datetime.now(UTC),
            "content_json": json.dumps(summary.content, sort_keys=True) if drafted else None,
            "consents_required": sorted(summary.consents_required) if drafted else [],
        }
        sink: AuditSink = request.app.state.audit
        await sink.send(views.topics.summaries, summary.summary_id.encode(), codec.encode(SUMMARY_EVENT, event))
        await views.applied(event_id)  # read your writes: the response shows the state the log holds
        await sink.write(
            "release",
            actor,
            kind,
            item_id=summary.summary_id,
            recipient=summary.partner,
            detail={"signal_id": summary.signal_id, "signal_version": summary.signal_version},
        )

    def find(request: Request, summary_id: str) -> Summary:
        summary: Summary | None = request.app.state.views.summaries.summaries.get(summary_id)
        if summary is None:
            raise HTTPException(404, "no such summary")
        return summary

    async def refuse(request: Request, caller: Caller, refused: ActionRefused) -> HTTPException:
        if refused.status == 403:
            return await forbid(request, caller, refused.reason, str(refused))
        return HTTPException(refused.status, str(refused))

    async def act(
        request: Request, caller: Caller, summary_id: str, check: Callable[[Summary], None], kind: str
    ) -> dict[str, Any]:
        """One step of a summary's life, if `check` allows it; released as soon as it is ready."""
        summary = find(request, summary_id)
        try:
            check(summary)
        except ActionRefused as refused:
            raise await refuse(request, caller, refused) from None
        await emit(request, caller, kind, summary)
        if kind != "withdrawn" and summary.status == "pending" and summary.ready:
            await emit(request, caller, "released", summary)
        return summary.public()

    @router.post("/v1/summaries", status_code=201, responses=responding(201, "The draft.", summary_links()))
    async def draft(
        request: Request, body: DraftRequest, caller: Annotated[Caller, Depends(require("analyst"))]
    ) -> Any:
        """Draft a summary of a signal for one partner; its content is the partner's view, as decided by policy."""
        views: HubViews = request.app.state.views
        if body.partner not in partners:
            raise invalid((("body", "partner"), "not a partner with a sharing agreement", "value_error"))
        version = views.latest.get(body.signal_id)
        if version is None or not isinstance(views.view(caller, version), dict):
            raise HTTPException(404, "no such signal visible to this caller")
        partner_caller = Caller(f"partner {body.partner}", "liaison", None, body.partner, "", caller.expires_at)
        content = views.view(partner_caller, version)
        if content is False:
            raise HTTPException(409, "the sharing decisions for this signal's reports are not in yet; try again")
        if content is None:
            raise invalid((("body", "partner"), f"nothing of this signal may go to {body.partner}", "value_error"))
        assert isinstance(content, dict)
        consents = sorted(a for a in content["agencies"] if body.partner not in authorised.get(a, frozenset()))
        draft = Summary(
            summary_id="sum-" + uuid.uuid4().hex[:20],
            partner=body.partner,
            signal_id=body.signal_id,
            signal_version=content["version"],
            drafter=caller.subject,
            content=jsonable_encoder(content),
            consents_required=set(consents),
        )
        await emit(request, caller, "drafted", draft)
        return find(request, draft.summary_id).public()

    @router.get("/v1/summaries", responses=responding(200, "Drafts awaiting consent or approval.", pending_links()))
    async def pending(
        request: Request, caller: Annotated[Caller, Depends(require("releasing_officer", "analyst"))]
    ) -> dict[str, Any]:
        """Drafts awaiting consent or approval."""
        return {"summaries": [s.public() for s in request.app.state.views.summaries.pending()]}

    @router.post("/v1/summaries/{summary_id}/consent", responses=responding(200, "The summary now.", summary_links()))
    async def consent(
        request: Request, summary_id: str, caller: Annotated[Caller, Depends(require("releasing_officer"))]
    ) -> Any:
        """A contributing agency's releasing officer consents to the release."""
        return await act(request, caller, summary_id, lambda s: check_consent(s, caller.agency), "consented")

    @router.post("/v1/summaries/{summary_id}/approve", responses=responding(200, "The summary now.", summary_links()))
    async def approve(
        request: Request, summary_id: str, caller: Annotated[Caller, Depends(require("releasing_officer"))]
    ) -> Any:
        """A releasing officer who did not draft it approves; it is released once every consent is in."""
        return await act(request, caller, summary_id, lambda s: check_approve(s, caller.subject), "approved")

    @router.post("/v1/summaries/{summary_id}/withdraw", responses=responding(200, "The summary now.", summary_links()))
    async def withdraw(
        request: Request,
        summary_id: str,
        caller: Annotated[Caller, Depends(require("releasing_officer", "analyst"))],
    ) -> Any:
        return await act(
            request, caller, summary_id, lambda s: check_withdraw(s, caller.subject, caller.role), "withdrawn"
        )

    @router.get("/v1/partners/{partner}/summaries", tags=["partners"])
    async def partner_summaries(
        request: Request,
        partner: str,
        caller: Annotated[Caller, Depends(require("liaison"))],
        after: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """Released summaries (and withdrawals) for this partner's liaison officers only."""
        if caller.partner != partner:
            raise await forbid(request, caller, "other_partner", "a liaison officer sees only their own partner's")
        try:
            cursor = decode_cursor(after)
        except CursorError as exc:
            raise invalid((("query", "after"), str(exc), "value_error")) from None
        views: HubViews = request.app.state.views
        items, position = views.partner_page(partner, cursor, limit)
        if items:
            await request.app.state.audit.disclosed(
                caller, "summaries", {"summaries": [f"{i['summary_id']}:{i['status']}" for i in items]}
            )
        return {"summaries": items, "next": encode_cursor(position)}

    return router
