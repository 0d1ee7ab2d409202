"""TAXII 2.1 and STIX 2.1 for partners: collection ids, the objects of a released summary, pages of a
collection (gateway/routes/taxii.py serves them).

A released summary is a STIX 2.1 `report` that refers to a `note` holding the summary, both
marked with the OASIS TLP 2.0 marking-definition objects (built here as the standard's fixed
objects: the stix2 library predates TLP 2.0). A withdrawal is a new version of both with
`revoked: true`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import JSONResponse

from domain.read_models import ReadModels
from domain.release import Summary

TAXII = "application/taxii+json;version=2.1"
STIX = "application/stix+json;version=2.1"
NAMESPACE = uuid.UUID("8f2d5c1e-5b9c-4f43-9d4e-1f3a7c2b6e10")  # tiphub's: STIX ids derived from summary ids
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


class CollectionNotFound(LookupError):
    """No collection has this id: a 404 with a TAXII error message."""


Row = tuple[datetime, dict[str, Any]]  # (date added, object)


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


def stix_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def stix_objects(summary: Summary, released_at: datetime, withdrawn_at: datetime | None) -> list[dict[str, Any]]:
    """The report and note of a released summary; revoked versions once it is withdrawn."""
    content = summary.content
    report_id = f"report--{uuid.uuid5(NAMESPACE, 'report|' + summary.summary_id)}"
    note_id = f"note--{uuid.uuid5(NAMESPACE, 'note|' + summary.summary_id)}"
    modified = withdrawn_at or released_at
    common = {
        "spec_version": "2.1",
        "created": stix_timestamp(released_at),
        "modified": stix_timestamp(modified),
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
        "published": stix_timestamp(released_at),
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


def partner_of(partners: Iterable[str], collection: str) -> str | None:
    """The partner whose collection this is; None for an id that is no collection."""
    return next((p for p in partners if collection_id(p) == collection), None)


def describe(partner: str) -> dict[str, Any]:
    return {
        "id": collection_id(partner),
        "title": f"Summaries released to {partner}",
        "can_read": True,
        "can_write": False,
        "media_types": [STIX],
    }


def entries(views: ReadModels, partner: str, partitions: int) -> list[Row]:
    """(date added, object) for every object version of this partner's collection, in order: the partner's
    own releases and withdrawals, read by index (as many as people released to the partner)."""
    out: list[Row] = []
    released: dict[str, datetime] = {}
    position = [0] * partitions
    events = []
    while True:
        before = position
        page, position = views.partner_events(partner, position, 500)
        events += page
        if position == before:
            break
    for event, summary in events:
        summary_id, kind, at = event.summary_id, event.kind, event.at
        if kind == "released":
            released[summary_id] = at
            out += [(at, o) for o in stix_objects(summary, at, None)]
        elif kind == "withdrawn" and summary_id in released:
            out += [(at, o) for o in stix_objects(summary, released[summary_id], at)]
    return out


def window(
    rows: list[Row], added_after: str | None, limit: int | None, next_: str | None
) -> tuple[list[Row], bool, str | None]:
    """(page, more, next) of a collection's rows for a TAXII query."""
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


def date_headers(page: list[Row]) -> dict[str, str]:
    if not page:
        return {}
    return {
        "X-TAXII-Date-Added-First": stix_timestamp(page[0][0]),
        "X-TAXII-Date-Added-Last": stix_timestamp(page[-1][0]),
    }
