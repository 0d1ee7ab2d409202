"""Partner summaries: two-person release with originator consent, as a fold over tip.summaries.

Life of a summary:
- an analyst drafts it for one partner; its content is the partner's view of a signal as the
  sharing decisions allow (computed, never typed);
- each contributing agency whose originator agreement does not pre-authorise release to that
  partner must consent, through one of its releasing officers;
- a releasing officer other than the drafter approves;
- once approved with every consent it is released: the partner's liaison officers can pull it;
- a releasing officer or the drafter can withdraw it at any time; the partner then sees only
  that it was withdrawn.

`check_*` functions decide whether an action is allowed (pure); `SummaryBook.apply` folds the
events, so every gateway instance rebuilds the same state from the topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class ActionRefused(Exception):
    """`status` is the HTTP status: 403 for who may not, 409 for a summary in the wrong state."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass
class Summary:
    summary_id: str
    partner: str
    signal_id: str
    signal_version: int
    drafter: str  # the token subject: one person is the drafter under any of their roles
    content: dict[str, Any]
    consents_required: set[str]
    consents: set[str] = field(default_factory=set)
    approved_by: str | None = None
    status: str = "pending"  # pending | released | withdrawn
    released: bool = False  # was ever released (a withdrawal is then shown to the partner)

    @property
    def ready(self) -> bool:
        return self.approved_by is not None and self.consents_required <= self.consents

    def public(self) -> dict[str, Any]:
        return {
            "summary_id": self.summary_id,
            "partner": self.partner,
            "signal_id": self.signal_id,
            "signal_version": self.signal_version,
            "status": self.status,
            "drafted_by": self.drafter,
            "approved_by": self.approved_by,
            "consents_required": sorted(self.consents_required),
            "consents": sorted(self.consents),
            "content": self.content,
        }

    def for_partner(self) -> dict[str, Any]:
        """What the partner's liaison officers see: content once released, nothing of it once withdrawn."""
        shown: dict[str, Any] = {"summary_id": self.summary_id, "status": self.status}
        if self.status == "released":
            shown["content"] = self.content
        return shown


@dataclass
class SummaryBook:
    summaries: dict[str, Summary] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def apply(self, event: dict[str, Any]) -> None:
        if event["event_id"] in self.seen:
            return  # the writer applies its own event, and the tail brings it again
        self.seen.add(event["event_id"])
        kind, sid = event["kind"], event["summary_id"]
        if kind == "drafted":
            self.summaries[sid] = Summary(
                summary_id=sid,
                partner=event["partner"],
                signal_id=event["signal_id"],
                signal_version=event["signal_version"],
                drafter=event["actor"].partition(":")[2],  # the person, whatever role they drafted in
                content=json.loads(event["content_json"] or "{}"),
                consents_required=set(event["consents_required"]),
            )
            return
        summary = self.summaries.get(sid)
        if summary is None:
            return
        if kind == "consented" and event["actor_agency"]:
            summary.consents.add(event["actor_agency"])
        elif kind == "approved":
            summary.approved_by = event["actor"]
        elif kind == "released":
            summary.status, summary.released = "released", True
        elif kind == "withdrawn":
            summary.status = "withdrawn"

    def pending(self) -> list[Summary]:
        return [s for s in self.summaries.values() if s.status == "pending"]


def check_consent(summary: Summary, actor_agency: str | None) -> None:
    if summary.status != "pending":
        raise ActionRefused(409, "not_pending", f"summary is {summary.status}")
    if actor_agency not in summary.consents_required:
        raise ActionRefused(403, "not_a_consenting_agency", "only a contributing agency that must consent can")


def check_approve(summary: Summary, subject: str) -> None:
    if summary.status != "pending":
        raise ActionRefused(409, "not_pending", f"summary is {summary.status}")
    if subject == summary.drafter:
        raise ActionRefused(403, "drafter_cannot_approve", "the drafter of a summary cannot approve it")
    if summary.approved_by is not None:
        raise ActionRefused(409, "already_approved", "summary is already approved")


def check_withdraw(summary: Summary, subject: str, role: str) -> None:
    if summary.status == "withdrawn":
        raise ActionRefused(409, "already_withdrawn", "summary is already withdrawn")
    if role != "releasing_officer" and subject != summary.drafter:
        raise ActionRefused(403, "not_allowed_to_withdraw", "only a releasing officer or the drafter can withdraw")
