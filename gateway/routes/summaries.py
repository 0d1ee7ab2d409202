"""The release workflow over HTTP: what may go to a partner, drafts, consent, approval, withdrawal, and the
partners' pull (gateway/release.py does the work, domain/release.py holds the rules)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from domain.callers import Caller
from domain.linking import partition_of
from domain.release import Summary, check_approve, check_consent, check_withdraw, concerns
from gateway.deps import AnalystCaller, LiaisonCaller, OfficerCaller, OfficerOrAnalystCaller, StateDep
from gateway.errors import NotPermitted, NotVisible
from gateway.links import pending_links, responding, summary_links
from gateway.paging import partner_page
from gateway.release import candidates, draft_summary, partner_view, recheck, releasable, shown_to, summary_event
from gateway.security import invalid
from gateway.state import GatewayState
from policies.visibility import Visible
from schemas.codec import WireCodec

SUMMARY_EVENT = "tiphub.SummaryEvent"
PARTNER_FEED = "partner-summaries"
CODEC = WireCodec()

router = APIRouter(tags=["release"])


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


async def emit(state: GatewayState, caller: Caller, kind: str, summary: Summary) -> None:
    """Write one lifecycle event and its audit event; return once this gateway's tail has folded it.

    Every event of one partner's summaries goes to one partition (keyed by summary id all the same), so
    the partner's feed has one order, whichever gateway wrote it."""
    views, topics = state.views, state.topics
    event = summary_event(summary, kind, caller)
    partition = partition_of(f"partner|{summary.partner}", topics.partitions)
    await state.publisher.send(
        topics.summaries, summary.summary_id.encode(), CODEC.encode(SUMMARY_EVENT, event), partition
    )
    await state.tail.until(lambda: views.folded(event["event_id"]))  # read your writes: show what the log holds
    await state.audit.write(
        "release",
        event["actor"],
        kind,
        item_id=summary.summary_id,
        recipient=summary.partner,
        detail={"signal_id": summary.signal_id, "signal_version": summary.signal_version},
    )


def find(state: GatewayState, caller: Caller, summary_id: str) -> Summary:
    """A summary that is this caller's business; any other id, real or not, is the same NotVisible."""
    summary = state.views.summary(summary_id)
    if summary is None or not concerns(summary, caller):
        raise NotVisible("no such summary")
    return summary


async def act(
    state: GatewayState, caller: Caller, summary_id: str, check: Callable[[Summary], None], kind: str
) -> dict[str, Any]:
    """One step of a summary's life, if `check` allows it (else ActionRefused); released as soon as it is
    ready, after the content and agreements are checked again."""
    summary = find(state, caller, summary_id)
    check(summary)
    if kind == "approved" or (kind == "consented" and summary.approved_by is not None):
        recheck(state.views, state.visibility, state.settings.agreements_dir, summary)
    await emit(state, caller, kind, summary)
    summary = find(state, caller, summary_id)  # as the log holds it now, this step folded
    if kind != "withdrawn" and summary.status == "pending" and summary.ready:
        await emit(state, caller, "released", summary)
        summary = find(state, caller, summary_id)
    return shown_to(state.views, caller, summary)


# What each field of a partner's summary is computed from: the report field whose decided rule governs it.
CONTENT_SOURCES: dict[str, str | None] = {
    "signal_id": None,  # the partner's own signal id, always
    "requirement_id": None,
    "report_count": None,
    "agencies": "source_agency",
    "elements": "elements",
    "act_means_purpose": "elements",
    "minor_involved": "subjects.minor",
    "first_seen": "observed_at",
    "last_seen": "observed_at",
}
RULE_WORDS = {"share": "shared", "generalise": "generalised", "drop": "withheld"}


def content_fields(
    state: GatewayState, partner: str, agency: str, report_ids: list[str], content: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each field of what the partner would receive, with the rule that let it go and the clauses behind it:
    the weakest rule the decisions for the partner (and for the drafting agency, which a summary never shows
    more than) gave the report field it is computed from, over every report."""
    decided: dict[str, list[dict[str, Any]]] = {}
    for report_id in report_ids:
        for recipient in (partner, agency):
            found = state.visibility.report_view(recipient, report_id)
            for field in found[1] if found is not None else ():
                decided.setdefault(field["field"], []).append(field)
    rank = {"drop": 0, "generalise": 1, "share": 2}
    out = []
    for name, value in content.items():
        source = CONTENT_SOURCES.get(name)
        if source is None:
            out.append(
                {"field": name, "value": value, "rule": "share", "from": None, "basis": ["the partner's own signal"]}
            )
            continue
        fields = decided.get(source, [])
        rule = min((f["rule"] for f in fields), key=rank.__getitem__, default="share")
        basis = sorted({f["basis"] for f in fields if f["rule"] == rule})
        out.append({"field": name, "value": value, "rule": rule, "from": source, "basis": basis})
    return out


def held_report(report: Visible) -> dict[str, Any]:
    """A report's headline as the agency may see it now, each field under the rule its decision gave it."""
    facts = report.facts

    def under(field: str, value: Any, generalised: Any) -> Any:
        rule = report.rule(field)
        return value if rule == "share" else generalised if rule == "generalise" else None

    return {
        "report_id": facts.report_id,
        "visible": True,
        "source_agency": under("source_agency", facts.agency, facts.agency.split("-", 1)[0]),
        "indicator_type": under("indicator_type", facts.indicator_type, None),
        "observed_at": under("observed_at", facts.observed_at, facts.observed_at.strftime("%Y-%m")),
        "elements": under("elements", list(facts.elements), None),
    }


def known_partner(state: GatewayState, partner: str, where: tuple[str, ...]) -> None:
    if partner not in state.partners:
        raise invalid((where, "not a partner with a sharing agreement", "value_error"))


@router.get("/v1/signals/{signal_id}/partners/{partner}", tags=["analysts"])
async def partner_views(signal_id: str, partner: str, caller: AnalystCaller, state: StateDep) -> dict[str, Any]:
    """What the partner would receive of this signal: each of its own signals built from reports both your
    agency and the partner may see, with the content a summary of it would carry."""
    known_partner(state, partner, ("path", "partner"))
    record, _ = state.visibility.own_signal(caller.acts_for, signal_id)
    now = datetime.now(UTC)
    out = []
    for found in candidates(state.views, caller, record, partner):
        content = partner_view(state.visibility, found, partner, caller.acts_for, now)
        if isinstance(content, dict):
            shared = sorted(set(found["report_ids"]) & set(record["report_ids"]))
            fields = await asyncio.to_thread(
                content_fields, state, partner, caller.acts_for, found["report_ids"], content
            )
            out.append(
                {"partner_signal": found["signal_id"], "shared_reports": shared, "content": content, "fields": fields}
            )
    await state.audit.disclosed(
        caller, signal_id, {"partner": partner, "partner_signals": [o["partner_signal"] for o in out]}
    )
    return {"signal_id": signal_id, "partner": partner, "partner_signals": out}


@router.get("/v1/partners", tags=["analysts"])
async def partners(caller: OfficerOrAnalystCaller, state: StateDep) -> dict[str, list[str]]:
    """The partners abroad a sharing agreement names: whom a summary can be drafted for."""
    return {"partners": sorted(state.partners)}


@router.get("/v1/releasable", tags=["analysts"])
async def what_may_go(
    caller: AnalystCaller, state: StateDep, partner: Annotated[str, Query(min_length=1, max_length=32)]
) -> dict[str, Any]:
    """What could go to a partner: the open signals of the reports both your agency and the partner may
    see, each with the content a summary of it would carry."""
    known_partner(state, partner, ("query", "partner"))
    now = datetime.now(UTC)
    out = []
    for record in releasable(state.views, caller, partner):
        content = partner_view(state.visibility, record, partner, caller.acts_for, now)
        if isinstance(content, dict):
            out.append({"partner_signal": record["signal_id"], "content": content})
    await state.audit.disclosed(
        caller, "releasable", {"partner": partner, "partner_signals": [o["partner_signal"] for o in out]}
    )
    return {"partner": partner, "signals": out}


@router.post("/v1/summaries", status_code=201, responses=responding(201, "The draft.", summary_links()))
async def draft(body: DraftRequest, caller: AnalystCaller, state: StateDep) -> Any:
    """Draft a summary for one partner of a signal of the reports both your agency and the partner may see
    (named directly, or through one of your signals), its content as the partner's decided views allow."""
    views = state.views
    known_partner(state, body.partner, ("body", "partner"))
    if body.signal_id is not None:
        record, _ = state.visibility.own_signal(caller.acts_for, body.signal_id)
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
    content = partner_view(state.visibility, chosen, body.partner, caller.acts_for, datetime.now(UTC))
    if not isinstance(content, dict):
        raise HTTPException(409, "the sharing decisions for this signal's reports are changing; try again")
    summary = draft_summary(views, caller, body.partner, chosen, content, state.settings.agreements_dir)
    await emit(state, caller, "drafted", summary)
    return find(state, caller, summary.summary_id).public()


@router.get("/v1/summaries", responses=responding(200, "Drafts awaiting consent or approval.", pending_links()))
async def pending(caller: OfficerOrAnalystCaller, state: StateDep) -> dict[str, Any]:
    """Drafts awaiting consent or approval that are the caller's business: their agency's drafts, and for a
    releasing officer those their agency must consent to (showing only their agency's part)."""
    summaries = [s for s in state.views.pending_summaries() if concerns(s, caller)]
    if summaries:
        await state.audit.disclosed(caller, "summaries", {"summaries": [s.summary_id for s in summaries]})
    return {"summaries": [shown_to(state.views, caller, s) for s in summaries]}


@router.get("/v1/summaries/{summary_id}")
async def one_summary(summary_id: str, caller: OfficerOrAnalystCaller, state: StateDep) -> dict[str, Any]:
    """One summary that is the caller's business, as they may see it. For the drafting agency, beside what
    the partner would receive: each field with its rule and clauses, and the reports as the agency holds them
    (what its analysts see), so that whoever approves sees what goes out and from what."""
    summary = find(state, caller, summary_id)
    shown = shown_to(state.views, caller, summary)
    if caller.agency != summary.drafter_agency:
        await state.audit.disclosed(caller, summary_id, {"own_reports": shown["content"]["your_reports"]})
        return shown

    def held_and_fields() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """On a thread of its own: a query per report on PostgreSQL."""
        now = datetime.now(UTC)
        reports = [
            held_report(found) if isinstance(found := state.visibility.visible(caller.acts_for, r, now), Visible)
            else {"report_id": r, "visible": False}  # retracted, or past what the agency may keep: nothing shown
            for r in summary.report_ids
        ]  # fmt: skip
        ids = list(summary.report_ids)
        return reports, content_fields(state, summary.partner, summary.drafter_agency, ids, summary.content)

    reports, fields = await asyncio.to_thread(held_and_fields)
    await state.audit.disclosed(caller, summary_id, {"reports": list(summary.report_ids)})
    return {**shown, "drafter_agency": summary.drafter_agency, "fields": fields, "reports": reports}


@router.post("/v1/summaries/{summary_id}/consent", responses=responding(200, "The summary now.", summary_links()))
async def consent(summary_id: str, caller: OfficerCaller, state: StateDep) -> Any:
    """A contributing agency's releasing officer consents to the release."""
    return await act(state, caller, summary_id, lambda s: check_consent(s, caller), "consented")


@router.post("/v1/summaries/{summary_id}/approve", responses=responding(200, "The summary now.", summary_links()))
async def approve(summary_id: str, caller: OfficerCaller, state: StateDep) -> Any:
    """A releasing officer of the drafting agency who did not draft it approves; it is released once every
    consent is in."""
    return await act(state, caller, summary_id, lambda s: check_approve(s, caller), "approved")


@router.post("/v1/summaries/{summary_id}/withdraw", responses=responding(200, "The summary now.", summary_links()))
async def withdraw(summary_id: str, caller: OfficerOrAnalystCaller, state: StateDep) -> Any:
    return await act(state, caller, summary_id, lambda s: check_withdraw(s, caller), "withdrawn")


@router.get("/v1/partners/{partner}/summaries", tags=["partners"])
async def partner_summaries(
    partner: str,
    caller: LiaisonCaller,
    state: StateDep,
    after: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Released summaries (and withdrawals) for this partner's liaison officers only."""
    if caller.partner != partner:
        raise NotPermitted("other_partner", "a liaison officer sees only their own partner's")
    views, cursors = state.views, state.cursors
    cursor = cursors.open(PARTNER_FEED, partner, after, state.topics.partitions)
    items, position = await asyncio.to_thread(partner_page, views, partner, cursor, limit)
    if items:
        await state.audit.disclosed(
            caller, "summaries", {"summaries": [f"{i['summary_id']}:{i['status']}" for i in items]}
        )
    return {"summaries": items, "next": cursors.seal(PARTNER_FEED, partner, position)}
