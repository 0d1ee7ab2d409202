"""Triage: an agency's analysts set the state of their own signals, with a note sealed on tip.triage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from domain import crypto
from domain.ports import KeyRequest
from gateway.deps import AnalystCaller, StateDep
from gateway.triage import note_key_id, triage_history
from schemas.codec import WireCodec

TRIAGE = "tiphub.TriageEvent"

router = APIRouter(tags=["analysts"])


class TriageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently dropped

    state: Literal["new", "triaged", "actioned", "closed"]
    note: str = Field(default="", max_length=2000, description="Free text; sealed on the topic, shown to analysts.")


@router.post("/v1/signals/{signal_id}/triage")
async def triage(request: Request, signal_id: str, body: TriageRequest, caller: AnalystCaller, state: StateDep) -> Any:
    """Set a signal's triage state with a note: the caller's agency's own triage of its own signal. The
    note is sealed on tip.triage under a key of its own that goes with any person of the signal."""
    views, vault = state.views, state.vault
    record, _ = state.visibility.own_signal(caller.acts_for, signal_id)
    event_id = str(uuid.uuid4())
    sealed = None
    if body.note:
        key_id = note_key_id(signal_id, event_id)
        people = tuple(
            subject["subject_key_id"]
            for report_id in record["report_ids"]
            for subject in (views.accepted(report_id) or {"subjects": ()})["subjects"]
        )
        key = vault.get_or_create_many([KeyRequest(key_id, signal_id, (), people)])[key_id]
        sealed = crypto.seal(key, body.note.encode(), key_id.encode())
    event = {
        "event_id": event_id,
        "signal_id": signal_id,
        "state": body.state,
        "actor": f"{caller.role}:{caller.subject}",
        "actor_agency": caller.agency,
        "at": datetime.now(UTC),
        "note_sealed": sealed,
    }
    await state.publisher.send(state.topics.triage, signal_id.encode(), WireCodec().encode(TRIAGE, event))
    await state.tail.until(lambda: views.folded(event_id))
    return {"signal_id": signal_id, "triage": triage_history(views, vault, signal_id)}
