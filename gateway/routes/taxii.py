"""TAXII 2.1 for partners: discovery, one API root, one read-only collection per partner (gateway/taxii.py
builds the objects). A liaison officer sees only their own partner's collection; any other is 403 and
audited."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response

from domain.callers import Caller
from gateway.deps import LiaisonCaller, StateDep
from gateway.errors import NotPermitted
from gateway.state import GatewayState
from gateway.taxii import (
    STIX,
    TAXII,
    CollectionNotFound,
    Row,
    TaxiiResponse,
    date_headers,
    describe,
    entries,
    partner_of,
    stix_timestamp,
    tlp2_marking,
    window,
)

router = APIRouter(prefix="/taxii2", tags=["taxii"], default_response_class=TaxiiResponse)


def taxii(body: Any, headers: dict[str, str] | None = None) -> Response:
    return TaxiiResponse(body, headers=headers)  # TAXII's errors are answered in gateway/handlers.py


def own_collection(state: GatewayState, caller: Caller, collection: str) -> str:
    """The partner of the caller's own collection; CollectionNotFound or NotPermitted for any other id."""
    partner = partner_of(state.partners, collection)
    if partner is None:
        raise CollectionNotFound(collection)
    if partner != caller.partner:
        raise NotPermitted("other_partner", "a liaison officer reads only their own collection")
    return partner


@router.get("/")
async def discovery(request: Request, caller: LiaisonCaller) -> Response:
    root = str(request.url_for("api_root"))
    body = {"title": "tiphub", "description": "Released summaries", "default": root, "api_roots": [root]}
    return taxii(body)


@router.get("/api/", name="api_root")
async def api_root(caller: LiaisonCaller) -> Response:
    return taxii({"title": "tiphub partner summaries", "versions": [TAXII], "max_content_length": 1 << 20})


@router.get("/api/collections/")
async def collections(caller: LiaisonCaller, state: StateDep) -> Response:
    return taxii({"collections": [describe(p) for p in sorted(state.partners) if p == caller.partner]})


@router.get("/api/collections/{collection}/")
async def collection(collection: str, caller: LiaisonCaller, state: StateDep) -> Response:
    return taxii(describe(own_collection(state, caller, collection)))


async def paged(
    state: GatewayState,
    caller: Caller,
    collection: str,
    query: tuple[str | None, int | None, str | None],
    rows_of: Callable[[list[Row]], Awaitable[list[dict[str, Any]]]],
) -> Response:
    """The envelope both listings share: access check, window, `more`/`next`, date headers."""
    partner = own_collection(state, caller, collection)
    page, more, cursor = window(entries(state.views, partner, state.topics.partitions), *query)  # or TaxiiBadRequest
    body: dict[str, Any] = {"more": more, "objects": await rows_of(page)}
    if cursor:
        body["next"] = cursor
    return taxii(body, headers=date_headers(page))


@router.get("/api/collections/{collection}/objects/")
async def objects(
    collection: str,
    caller: LiaisonCaller,
    state: StateDep,
    added_after: str | None = None,
    limit: int | None = None,
    next: str | None = None,
) -> Response:
    async def stix(page: list[Row]) -> list[dict[str, Any]]:
        found = [o for _, o in page]
        if found:
            shown = [f"{o['id']}@{o['modified']}" for o in found]
            await state.audit.disclosed(caller, collection, {"taxii_objects": shown})
            found.append(tlp2_marking("amber"))
        return found

    return await paged(state, caller, collection, (added_after, limit, next), stix)


@router.get("/api/collections/{collection}/manifest/")
async def manifest(
    collection: str,
    caller: LiaisonCaller,
    state: StateDep,
    added_after: str | None = None,
    limit: int | None = None,
    next: str | None = None,
) -> Response:
    async def rows(page: list[Row]) -> list[dict[str, Any]]:
        return [
            {"id": o["id"], "date_added": stix_timestamp(at), "version": o["modified"], "media_type": STIX}
            for at, o in page
        ]

    return await paged(state, caller, collection, (added_after, limit, next), rows)
