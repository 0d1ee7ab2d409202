"""The analysts' signal feed (pages and Server-Sent Events with sealed, resumable cursors) and one signal
with its contributing reports, as the caller may see them (gateway/visibility.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from sse_starlette.sse import EventSourceResponse

from domain.callers import Caller
from domain.ports import KeyVault
from gateway.cursors import CursorSealer
from gateway.deps import AnalystCaller, AuditDep, CursorsDep, StateDep, TailDep, VaultDep, ViewsDep, VisibilityDep
from gateway.links import responding, signal_page_links
from gateway.paging import signal_page
from gateway.state import GatewayState
from gateway.triage import triage_history
from streams.views import open_view

SIGNAL_FEED = "signals"
REPORT_HEADLINE = ("source_agency", "indicator_type", "observed_at", "elements")

router = APIRouter(tags=["analysts"])


def position_of(cursors: CursorSealer, caller: Caller, after: str | None) -> int:
    return cursors.open(SIGNAL_FEED, caller.acts_for, after, 1)[0]


def cursor_at(cursors: CursorSealer, caller: Caller, position: int) -> str:
    return cursors.seal(SIGNAL_FEED, caller.acts_for, [position])


@router.get("/v1/signals", responses=responding(200, "A page of signals.", signal_page_links()))
async def signals(
    caller: AnalystCaller,
    views: ViewsDep,
    visibility: VisibilityDep,
    cursors: CursorsDep,
    audit: AuditDep,
    after: Annotated[str | None, Query(description="The `next` cursor of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Signal versions of the caller's agency, correlated from the reports it may see, in feed order,
    each (signal_id, version) once."""
    position = position_of(cursors, caller, after)
    items, position = await asyncio.to_thread(signal_page, views, visibility, caller.acts_for, position, limit)
    if items:
        await audit.disclosed(caller, "signals", {"versions": [f"{s['signal_id']}@{s['version']}" for s, _ in items]})
    return {"signals": [item for item, _ in items], "next": cursor_at(cursors, caller, position)}


@router.get("/v1/signals/stream")
async def stream(
    request: Request,
    caller: AnalystCaller,
    views: ViewsDep,
    visibility: VisibilityDep,
    tail: TailDep,
    cursors: CursorsDep,
    audit: AuditDep,
    after: Annotated[str | None, Query(description="Where to start; Last-Event-ID wins.")] = None,
) -> EventSourceResponse:
    """The same feed as Server-Sent Events. Each event's id is the cursor just after it."""
    position = position_of(cursors, caller, request.headers.get("last-event-id") or after)

    async def events() -> AsyncIterator[dict[str, str]]:
        nonlocal position
        while True:
            items, after_page = await asyncio.to_thread(signal_page, views, visibility, caller.acts_for, position, 100)
            if items:
                await audit.disclosed(
                    caller, "signals", {"versions": [f"{s['signal_id']}@{s['version']}" for s, _ in items]}
                )
            for item, at in items:
                yield {
                    "id": cursor_at(cursors, caller, at),
                    "event": "signal",
                    "data": json.dumps(jsonable_encoder(item)),
                }
            position = after_page
            if not items:
                await tail.next_batch(1.0)

    return EventSourceResponse(events(), ping=15)


@router.get("/v1/signals/{signal_id}")
async def one_signal(signal_id: str, caller: AnalystCaller, state: StateDep, vault: VaultDep) -> Any:
    """The latest version of one signal and its contributing reports, as this caller may see them."""
    shown, reports = await asyncio.to_thread(signal_detail, state, vault, caller, signal_id)
    await state.audit.disclosed(caller, signal_id, {"version": shown["version"], "reports": shown["report_ids"]})
    return {
        **shown,
        "reports": reports,
        "triage": await asyncio.to_thread(triage_history, state.views, vault, signal_id),
    }


def signal_detail(
    state: GatewayState, vault: KeyVault, caller: Caller, signal_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the signal as the caller sees it, its reports as the caller may see them): read on a thread of its
    own, off the event loop (on PostgreSQL each read is a round trip)."""
    views, visibility = state.views, state.visibility
    _, shown = visibility.own_signal(caller.acts_for, signal_id)
    reports = []
    for report_id in shown["report_ids"]:
        found = visibility.report_view(caller.acts_for, report_id)
        view, fields = found if found is not None else (None, [])
        accepted = views.accepted(report_id)
        opened = open_view(view, accepted, vault, views.erased()) if view is not None and accepted else None
        reports.append(
            {
                "report_id": report_id,
                # Each as the caller's decision shows it: a generalised date is the month, a dropped one absent.
                **({k: opened.get(k) for k in REPORT_HEADLINE} if isinstance(opened, dict) else {}),
                "fields_shared": [f["path"] for f in fields if f["rule"] != "drop"],
                # Only what is shown, with the rule and clause that let it: a withheld field is not listed
                # (listing it would say that the report has it).
                "field_decisions": [f for f in fields if f["rule"] != "drop"],
                "view": opened,
            }
        )
    return shown, reports
