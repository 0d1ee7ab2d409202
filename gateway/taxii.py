"""TAXII 2.1 for partners: discovery, one API root, one read-only collection per partner.

A released summary is a STIX 2.1 `report` that refers to a `note` holding the summary, both
marked with the OASIS TLP 2.0 marking-definition objects (built here as the standard's fixed
objects: the stix2 library predates TLP 2.0). A withdrawal is a new version of both with
`revoked: true`. A liaison officer sees only their own partner's collection; any other is 403
and audited.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from domain.release import Summary
from gateway.security import forbid, require
from gateway.views import HubViews
from tiphub.tokens import Caller

TAXII = "application/taxii+json;version=2.1"
STIX = "application/stix+json;version=2.1"
NAMESPACE = uuid.UUID("8f2d5c1e-5b9c-4f43-9d4e-1f3a7c2b6e10")  # tiphub's: STIX ids derived from summary ids
LIAISON = require("liaison")  # module level: FastAPI resolves these annotations in the module's globals
TLP2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP2_IDS = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}


class TaxiiResponse(JSONResponse):
    media_type = TAXII


def tlp2_marking(level: str) -> dict[str, Any]:
    """The OASIS TLP 2.0 marking-definition object for a level (fixed by the standard)."""
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": TLP2_IDS[level],
        "created": "2022-10-01T00:00:00.000Z",
        "name": f"TLP:{level.upper()}",
        "extensions": {TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": level}},
    }


class TaxiiBadRequest(ValueError):
    """A query parameter a TAXII client got wrong: a 400 with a TAXII error message, never a 500."""


def _timestamp(text: str) -> datetime:
    """A TAXII timestamp (RFC 3339, UTC)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TaxiiBadRequest("added_after: not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise TaxiiBadRequest("added_after: a timestamp needs its zone (Z for UTC)")
    return moment


def collection_id(partner: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"collection|{partner}"))


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def stix_objects(summary: Summary, released_at: datetime, withdrawn_at: datetime | None) -> list[dict[str, Any]]:
    """The report and note of a released summary; revoked versions once it is withdrawn."""
    content = summary.content
    report_id = f"report--{uuid.uuid5(NAMESPACE, 'report|' + summary.summary_id)}"
    note_id = f"note--{uuid.uuid5(NAMESPACE, 'note|' + summary.summary_id)}"
    modified = withdrawn_at or released_at
    common = {
        "spec_version": "2.1",
        "created": _ts(released_at),
        "modified": _ts(modified),
        "object_marking_refs": [TLP2_IDS["amber"]],
        **({"revoked": True} if withdrawn_at else {}),
    }
    agencies = ", ".join(content.get("agencies") or ["sources not shared"])
    text = (
        f"Collection Plan {content.get('requirement_id')} signal {summary.signal_id}: "
        f"{content.get('report_count')} report(s) from {agencies}; elements "
        f"{', '.join(content.get('act_means_purpose') or [])}; minor involved: {content.get('minor_involved')}; "
        f"observed {content.get('first_seen')} to {content.get('last_seen')}."
    )
    report = {
        "type": "report",
        "id": report_id,
        **common,
        "name": f"tiphub summary {summary.summary_id} ({content.get('requirement_id')})",
        "description": text,
        "report_types": ["threat-report"],
        "published": _ts(released_at),
        "object_refs": [note_id],
        "labels": ["human-trafficking", str(content.get("requirement_id"))],
    }
    note = {
        "type": "note",
        "id": note_id,
        **common,
        "abstract": f"Released summary {summary.summary_id}",
        "content": text + " Details: " + json.dumps(content, sort_keys=True, default=str),
        "object_refs": [report_id],
    }
    return [report, note]


def build_taxii_router(partners: set[str]) -> APIRouter:
    router = APIRouter(prefix="/taxii2", tags=["taxii"], default_response_class=TaxiiResponse)

    def taxii(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return TaxiiResponse(body, status_code=status, headers=headers)

    def partner_of(collection: str) -> str | None:
        return next((p for p in partners if collection_id(p) == collection), None)

    async def own_collection(request: Request, caller: Caller, collection: str) -> str | Response:
        partner = partner_of(collection)
        if partner is None:
            await request.app.state.audit.denied(request, "not_found", caller)
            return taxii({"title": "Collection not found", "http_status": "404"}, 404)
        if partner != caller.partner:
            raise await forbid(request, caller, "other_partner", "a liaison officer reads only their own collection")
        return partner

    def entries(request: Request, partner: str) -> list[tuple[datetime, dict[str, Any]]]:
        """(date added, object) for every object version of this partner's collection, in order."""
        views: HubViews = request.app.state.views
        out: list[tuple[datetime, dict[str, Any]]] = []
        released: dict[str, datetime] = {}
        for _, _, summary_id, kind, at in views.summaries.partner_log:
            summary = views.summaries.book.summaries.get(summary_id)
            if summary is None or summary.partner != partner:
                continue
            if kind == "released":
                released[summary_id] = at
                out += [(at, o) for o in stix_objects(summary, at, None)]
            elif kind == "withdrawn" and summary_id in released:
                out += [(at, o) for o in stix_objects(summary, released[summary_id], at)]
        return out

    @router.get("/")
    async def discovery(request: Request, caller: Annotated[Caller, Depends(LIAISON)]) -> Response:
        root = str(request.url_for("api_root"))
        body = {"title": "tiphub", "description": "Released summaries", "default": root, "api_roots": [root]}
        return taxii(body)

    @router.get("/api/", name="api_root")
    async def api_root(caller: Annotated[Caller, Depends(LIAISON)]) -> Response:
        return taxii({"title": "tiphub partner summaries", "versions": [TAXII], "max_content_length": 1 << 20})

    def describe(partner: str) -> dict[str, Any]:
        return {
            "id": collection_id(partner),
            "title": f"Summaries released to {partner}",
            "can_read": True,
            "can_write": False,
            "media_types": [STIX],
        }

    @router.get("/api/collections/")
    async def collections(caller: Annotated[Caller, Depends(LIAISON)]) -> Response:
        return taxii({"collections": [describe(p) for p in sorted(partners) if p == caller.partner]})

    @router.get("/api/collections/{collection}/")
    async def collection(request: Request, collection: str, caller: Annotated[Caller, Depends(LIAISON)]) -> Response:
        partner = await own_collection(request, caller, collection)
        return partner if isinstance(partner, Response) else taxii(describe(partner))

    def window(
        request: Request, partner: str, added_after: str | None, limit: int | None, next_: str | None
    ) -> tuple[list[tuple[datetime, dict[str, Any]]], bool, str | None]:
        rows = entries(request, partner)
        if added_after:
            after = _timestamp(added_after)
            rows = [r for r in rows if r[0] > after]
        if next_ is not None and not re.fullmatch(r"[0-9]{1,9}", next_):
            raise TaxiiBadRequest("next: not a value this server returned")
        if limit is not None and limit < 1:
            raise TaxiiBadRequest("limit: must be a positive integer")
        start = int(next_) if next_ else 0
        size = min(limit or 100, 1000)
        page = rows[start : start + size]
        more = start + size < len(rows)
        return page, more, str(start + size) if more else None

    def date_headers(page: list[tuple[datetime, dict[str, Any]]]) -> dict[str, str]:
        if not page:
            return {}
        return {"X-TAXII-Date-Added-First": _ts(page[0][0]), "X-TAXII-Date-Added-Last": _ts(page[-1][0])}

    async def paged(
        request: Request,
        caller: Caller,
        collection: str,
        query: tuple[str | None, int | None, str | None],
        rows_of: Callable[[list[tuple[datetime, dict[str, Any]]]], Awaitable[list[dict[str, Any]]]],
    ) -> Response:
        """The envelope both listings share: access check, window, `more`/`next`, date headers."""
        partner = await own_collection(request, caller, collection)
        if isinstance(partner, Response):
            return partner
        try:
            page, more, cursor = window(request, partner, *query)
        except TaxiiBadRequest as exc:
            await request.app.state.audit.denied(request, "bad_request", caller)
            return taxii({"title": "Bad request", "description": str(exc), "http_status": "400"}, 400)
        body: dict[str, Any] = {"more": more, "objects": await rows_of(page)}
        if cursor:
            body["next"] = cursor
        return taxii(body, headers=date_headers(page))

    @router.get("/api/collections/{collection}/objects/")
    async def objects(
        request: Request,
        collection: str,
        caller: Annotated[Caller, Depends(LIAISON)],
        added_after: str | None = None,
        limit: int | None = None,
        next: str | None = None,
    ) -> Response:
        async def stix(page: list[tuple[datetime, dict[str, Any]]]) -> list[dict[str, Any]]:
            found = [o for _, o in page]
            if found:
                shown = [f"{o['id']}@{o['modified']}" for o in found]
                await request.app.state.audit.disclosed(caller, collection, {"taxii_objects": shown})
                found.append(tlp2_marking("amber"))
            return found

        return await paged(request, caller, collection, (added_after, limit, next), stix)

    @router.get("/api/collections/{collection}/manifest/")
    async def manifest(
        request: Request,
        collection: str,
        caller: Annotated[Caller, Depends(LIAISON)],
        added_after: str | None = None,
        limit: int | None = None,
        next: str | None = None,
    ) -> Response:
        async def rows(page: list[tuple[datetime, dict[str, Any]]]) -> list[dict[str, Any]]:
            return [
                {"id": o["id"], "date_added": _ts(at), "version": o["modified"], "media_type": STIX} for at, o in page
            ]

        return await paged(request, caller, collection, (added_after, limit, next), rows)

    return router
