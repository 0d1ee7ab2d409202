"""The release workflow over HTTP (domain/release.py holds the rules) and the partners' pull.

A summary for partner P drafted by an analyst of agency A is one signal of the release scope A>P:
correlated only from reports both A and P may see (streams/scoped.py), and its content is what P's
decided views of those reports allow (policies/visibility.py). So the drafter sees everything that
goes out, and neither the drafter nor the partner is shown anything shaped by a report hidden from
either. Before a summary is approved or released, its content is computed again and the partner's
and originators' agreements are read again: anything retracted, erased, past retention or no longer
agreed stops the release (409), and the drafter drafts again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from domain.release import ActionRefused, Summary, check_approve, check_consent, check_withdraw, concerns
from gateway.broker import Tail
from gateway.cursors import CursorError
from gateway.links import pending_links, responding, summary_links
from gateway.paging import partner_page
from gateway.ports import Publisher
from gateway.security import AuditSink, forbid, invalid, require
from gateway.views import HubViews
from gateway.visibility import UNKNOWN, Visibility
from policies.loader import AGREEMENTS_DIR, foreign_partners, load_directory
from policies.model import Agreement, OriginatorAgreement
from policies.visibility import Visible, partner_content
from schemas.codec import WireCodec
from streams.linking import partition_of
from streams.scoped import release_scope
from tiphub.tokens import Caller

SUMMARY_EVENT = "tiphub.SummaryEvent"
PARTNER_FEED = "partner-summaries"


class DraftRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently dropped

    signal_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="Your agency's signal to summarise."
    )
    partner: str = Field(min_length=1, max_length=32, description="The partner the summary is for, e.g. HSU-TH.")
    partner_signal: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Which signal of the reports both your agency and the partner may see (GET "
        "/v1/signals/{id}/partners/{partner} or GET /v1/releasable); with signal_id, default: the one that "
        "shares most reports with it; without signal_id, required.",
    )


class Agreements:
    """The agreements on disk, as in force on a given day (read again at every release)."""

    def __init__(self, directory: Any) -> None:
        self.all = load_directory(directory or AGREEMENTS_DIR)

    def _current(self, kind: type, key: Callable[[Any], str], on: date) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for agreement in self.all:
            if isinstance(agreement, kind) and agreement.valid_from <= on <= agreement.valid_until:
                held = found.get(key(agreement))
                if held is None or agreement.version > held.version:
                    found[key(agreement)] = agreement
        return found

    def recipient(self, partner: str, on: date) -> Agreement | None:
        found: Agreement | None = self._current(Agreement, lambda a: a.recipient, on).get(partner)
        return found

    def originators(self, on: date) -> dict[str, OriginatorAgreement]:
        return self._current(OriginatorAgreement, lambda a: a.originator, on)


def pre_authorised(directory: Any) -> dict[str, frozenset[str]]:
    """Per originator: partners its agreement in force today pre-authorises release to."""
    return {o: a.pre_authorised_release for o, a in Agreements(directory).originators(date.today()).items()}


def partner_view(
    visibility: Visibility, record: dict[str, Any], partner: str, agency: str, now: datetime
) -> dict[str, Any] | object | None:
    """What `partner` would receive of a release-scope signal now: None if a report of it is no longer
    visible to the partner or the drafting agency; UNKNOWN while a decision is on its way."""
    reports: list[Visible] = []
    for report_id in record["report_ids"]:
        to_partner, to_agency = visibility.visible(partner, report_id, now), visibility.visible(agency, report_id, now)
        if to_partner is UNKNOWN or to_agency is UNKNOWN:
            return UNKNOWN
        if not isinstance(to_partner, Visible) or not isinstance(to_agency, Visible):
            return None
        reports.append(to_partner.within(to_agency))  # never more than the drafting agency may see either
    content: dict[str, Any] = jsonable_encoder(partner_content(record, reports))
    return content


def build_router(agreements_dir: Any) -> APIRouter:
    router = APIRouter(tags=["release"])
    codec = WireCodec()
    partners = foreign_partners(agreements_dir)

    async def emit(request: Request, caller: Caller, kind: str, summary: Summary) -> None:
        """Write one lifecycle event and its audit event; return once this gateway's tail has folded it.

        Every event of one partner's summaries goes to one partition (keyed by summary id all the same), so
        the partner's feed has one order, whichever gateway wrote it."""
        views: HubViews = request.app.state.views
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
            "content_json": json.dumps(summary.content, sort_keys=True) if kind in ("drafted", "released") else None,
            "consents_required": sorted(summary.consents_required) if kind == "drafted" else [],
            "scope": summary.scope,
            "report_ids": list(summary.report_ids) if kind == "drafted" else [],
        }
        sink: AuditSink = request.app.state.audit
        publisher: Publisher = request.app.state.publisher
        tail: Tail = request.app.state.tail
        partition = partition_of(f"partner|{summary.partner}", views.topics.partitions)
        await publisher.send(
            views.topics.summaries, summary.summary_id.encode(), codec.encode(SUMMARY_EVENT, event), partition
        )
        await tail.until(lambda: views.folded(event_id))  # read your writes: the response shows the state the log holds
        await sink.write(
            "release",
            actor,
            kind,
            item_id=summary.summary_id,
            recipient=summary.partner,
            detail={"signal_id": summary.signal_id, "signal_version": summary.signal_version},
        )

    async def find(request: Request, caller: Caller, summary_id: str) -> Summary:
        """A summary that is this caller's business; any other id, real or not, is the same audited 404."""
        summary: Summary | None = request.app.state.views.summaries.book.summaries.get(summary_id)
        if summary is None or not concerns(summary, caller):
            await request.app.state.audit.denied(request, "not_found", caller)
            raise HTTPException(404, "no such summary")
        return summary

    def shown_to(request: Request, caller: Caller, summary: Summary) -> dict[str, Any]:
        if caller.agency == summary.drafter_agency:
            return summary.public()
        views: HubViews = request.app.state.views
        own = [r for r in summary.report_ids if views.accepted.agency_of(r) == caller.agency]
        return summary.for_consenting(caller.agency or "", {"your_reports": own, "report_count": len(own)})

    async def refuse(request: Request, caller: Caller, refused: ActionRefused) -> HTTPException:
        if refused.kind == "wrong_state":
            await request.app.state.audit.denied(request, refused.reason, caller)
            return HTTPException(409, str(refused))
        return await forbid(request, caller, refused.reason, str(refused))

    def recheck(request: Request, summary: Summary) -> None:
        """Before a summary is approved or released: its content is still what the partner would receive
        now, and the partner's and every contributor's agreements still let it go."""
        views: HubViews = request.app.state.views
        visibility: Visibility = request.app.state.visibility
        now = datetime.now(UTC)
        current = views.signals.latest(summary.scope, summary.signal_id)
        agency = summary.drafter_agency
        content = partner_view(visibility, current, summary.partner, agency, now) if current is not None else None
        if current is None or current["status"] != "open" or content != summary.content:
            raise ActionRefused(
                "content_changed",
                "what the partner would receive has changed since the draft (a report retracted, erased, "
                "past retention or newly linked): draft it again",
                kind="wrong_state",
            )
        agreements = Agreements(agreements_dir)
        if agreements.recipient(summary.partner, now.date()) is None:
            raise ActionRefused(
                "no_agreement_in_force", f"no agreement with {summary.partner} is in force today", kind="wrong_state"
            )
        originators = agreements.originators(now.date())
        for report_id in summary.report_ids:
            source = views.accepted.facts[report_id].agency
            held = originators.get(source)
            if held is None or summary.partner not in held.foreign_release:
                raise ActionRefused(
                    "originator_withholds",
                    f"{source} no longer releases its reports to {summary.partner}",
                    kind="wrong_state",
                )

    async def act(
        request: Request, caller: Caller, summary_id: str, check: Callable[[Summary], None], kind: str
    ) -> dict[str, Any]:
        """One step of a summary's life, if `check` allows it; released as soon as it is ready, after the
        content and agreements are checked again."""
        summary = await find(request, caller, summary_id)
        try:
            check(summary)
            if kind == "approved" or (kind == "consented" and summary.approved_by is not None):
                recheck(request, summary)
        except ActionRefused as refused:
            raise await refuse(request, caller, refused) from None
        await emit(request, caller, kind, summary)
        if kind != "withdrawn" and summary.status == "pending" and summary.ready:
            await emit(request, caller, "released", summary)
        return shown_to(request, caller, summary)

    def candidates(views: HubViews, caller: Caller, record: dict[str, Any], partner: str) -> list[dict[str, Any]]:
        """The release scope's open signals for the same requirement that share reports with the caller's
        signal, most shared first."""
        feed = views.signals.feed(release_scope(caller.acts_for or "", partner))
        if feed is None:
            return []
        mine = set(record["report_ids"])
        found = [
            r
            for r in feed.latest.values()
            if r["status"] == "open" and r["requirement_id"] == record["requirement_id"] and mine & set(r["report_ids"])
        ]
        return sorted(found, key=lambda r: (-len(mine & set(r["report_ids"])), r["signal_id"]))

    async def own_signal(request: Request, caller: Caller, signal_id: str) -> dict[str, Any]:
        views: HubViews = request.app.state.views
        visibility: Visibility = request.app.state.visibility
        record = views.signals.latest(caller.acts_for or "", signal_id)
        if record is None or not isinstance(visibility.render(caller.acts_for or "", record), dict):
            await request.app.state.audit.denied(request, "not_found", caller)
            raise HTTPException(404, "no such signal visible to this caller")
        return record

    def known_partner(partner: str, where: tuple[str, ...]) -> None:
        if partner not in partners:
            raise invalid((where, "not a partner with a sharing agreement", "value_error"))

    @router.get("/v1/signals/{signal_id}/partners/{partner}", tags=["analysts"])
    async def partner_views(
        request: Request, signal_id: str, partner: str, caller: Annotated[Caller, Depends(require("analyst"))]
    ) -> dict[str, Any]:
        """What the partner would receive of this signal: each of its own signals built from reports both your
        agency and the partner may see, with the content a summary of it would carry."""
        known_partner(partner, ("path", "partner"))
        views: HubViews = request.app.state.views
        record = await own_signal(request, caller, signal_id)
        now = datetime.now(UTC)
        out = []
        for found in candidates(views, caller, record, partner):
            content = partner_view(request.app.state.visibility, found, partner, caller.acts_for or "", now)
            if isinstance(content, dict):
                shared = sorted(set(found["report_ids"]) & set(record["report_ids"]))
                out.append({"partner_signal": found["signal_id"], "shared_reports": shared, "content": content})
        return {"signal_id": signal_id, "partner": partner, "partner_signals": out}

    def releasable(views: HubViews, caller: Caller, partner: str) -> list[dict[str, Any]]:
        feed = views.signals.feed(release_scope(caller.acts_for or "", partner))
        found = [r for r in feed.latest.values() if r["status"] == "open"] if feed else []
        return sorted(found, key=lambda r: r["signal_id"])

    @router.get("/v1/releasable", tags=["analysts"])
    async def what_may_go(
        request: Request,
        caller: Annotated[Caller, Depends(require("analyst"))],
        partner: Annotated[str, Query(min_length=1, max_length=32)],
    ) -> dict[str, Any]:
        """What could go to a partner: the open signals of the reports both your agency and the partner may
        see, each with the content a summary of it would carry."""
        known_partner(partner, ("query", "partner"))
        views: HubViews = request.app.state.views
        now = datetime.now(UTC)
        out = []
        for record in releasable(views, caller, partner):
            content = partner_view(request.app.state.visibility, record, partner, caller.acts_for or "", now)
            if isinstance(content, dict):
                out.append({"partner_signal": record["signal_id"], "content": content})
        return {"partner": partner, "signals": out}

    @router.post("/v1/summaries", status_code=201, responses=responding(201, "The draft.", summary_links()))
    async def draft(
        request: Request, body: DraftRequest, caller: Annotated[Caller, Depends(require("analyst"))]
    ) -> Any:
        """Draft a summary for one partner of a signal of the reports both your agency and the partner may see
        (named directly, or through one of your signals), its content as the partner's decided views allow."""
        views: HubViews = request.app.state.views
        known_partner(body.partner, ("body", "partner"))
        if body.signal_id is not None:
            record = await own_signal(request, caller, body.signal_id)
            found = candidates(views, caller, record, body.partner)
        elif body.partner_signal is not None:
            found = releasable(views, caller, body.partner)
        else:
            raise invalid((("body", "signal_id"), "give signal_id, partner_signal or both", "value_error"))
        if body.partner_signal is not None:
            found = [r for r in found if r["signal_id"] == body.partner_signal]
            if not found:
                where = "of this signal" if body.signal_id else f"that may go to {body.partner}"
                raise invalid((("body", "partner_signal"), f"not one of the partner's signals {where}", "value_error"))
        if not found:
            raise invalid((("body", "partner"), f"nothing of this signal may go to {body.partner}", "value_error"))
        chosen = found[0]
        content = partner_view(
            request.app.state.visibility, chosen, body.partner, caller.acts_for or "", datetime.now(UTC)
        )
        if not isinstance(content, dict):
            raise HTTPException(409, "the sharing decisions for this signal's reports are changing; try again")
        authorised = pre_authorised(agreements_dir)
        sources = {views.accepted.facts[r].agency for r in chosen["report_ids"]}
        summary = Summary(
            summary_id="sum-" + uuid.uuid4().hex[:20],
            partner=body.partner,
            scope=release_scope(caller.acts_for or "", body.partner),
            signal_id=chosen["signal_id"],
            signal_version=chosen["version"],
            drafter=caller.subject,
            drafter_agency=caller.acts_for or "",
            content=content,
            report_ids=tuple(chosen["report_ids"]),
            consents_required={a for a in sources if body.partner not in authorised.get(a, frozenset())},
        )
        await emit(request, caller, "drafted", summary)
        return (await find(request, caller, summary.summary_id)).public()

    @router.get("/v1/summaries", responses=responding(200, "Drafts awaiting consent or approval.", pending_links()))
    async def pending(
        request: Request, caller: Annotated[Caller, Depends(require("releasing_officer", "analyst"))]
    ) -> dict[str, Any]:
        """Drafts awaiting consent or approval that are the caller's business: their agency's drafts, and for a
        releasing officer those their agency must consent to (showing only their agency's part)."""
        summaries = request.app.state.views.summaries.book.pending()
        return {"summaries": [shown_to(request, caller, s) for s in summaries if concerns(s, caller)]}

    @router.post("/v1/summaries/{summary_id}/consent", responses=responding(200, "The summary now.", summary_links()))
    async def consent(
        request: Request, summary_id: str, caller: Annotated[Caller, Depends(require("releasing_officer"))]
    ) -> Any:
        """A contributing agency's releasing officer consents to the release."""
        return await act(request, caller, summary_id, lambda s: check_consent(s, caller), "consented")

    @router.post("/v1/summaries/{summary_id}/approve", responses=responding(200, "The summary now.", summary_links()))
    async def approve(
        request: Request, summary_id: str, caller: Annotated[Caller, Depends(require("releasing_officer"))]
    ) -> Any:
        """A releasing officer of the drafting agency who did not draft it approves; it is released once every
        consent is in."""
        return await act(request, caller, summary_id, lambda s: check_approve(s, caller), "approved")

    @router.post("/v1/summaries/{summary_id}/withdraw", responses=responding(200, "The summary now.", summary_links()))
    async def withdraw(
        request: Request,
        summary_id: str,
        caller: Annotated[Caller, Depends(require("releasing_officer", "analyst"))],
    ) -> Any:
        return await act(request, caller, summary_id, lambda s: check_withdraw(s, caller), "withdrawn")

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
        views: HubViews = request.app.state.views
        count = views.topics.partitions
        try:
            cursor = request.app.state.cursors.open(PARTNER_FEED, partner, after, count)
        except CursorError as exc:
            raise invalid((("query", "after"), str(exc), "value_error")) from None
        items, position = partner_page(views.summaries, partner, cursor, limit)
        if items:
            await request.app.state.audit.disclosed(
                caller, "summaries", {"summaries": [f"{i['summary_id']}:{i['status']}" for i in items]}
            )
        return {"summaries": items, "next": request.app.state.cursors.seal(PARTNER_FEED, partner, position)}

    return router
