"""The release rules: two-person release of partner summaries with originator consent, as a fold over
tip.summaries (pure: the gateway serves it, gateway/release.py and gateway/routes/summaries.py).

Life of a summary:
- an analyst drafts it for one partner; it is one signal of the release scope of the analyst's
  agency and that partner (domain/scoped.py: correlated only from reports both may see), and its
  content is what the partner's decided views of those reports allow (policies/visibility.py),
  computed, never typed;
- each contributing agency whose originator agreement does not pre-authorise release to that
  partner must consent, through one of its releasing officers;
- a releasing officer of the drafting agency, other than the drafter, approves: that agency sees
  every report of the content, so the approver sees what goes out;
- once approved with every consent it is released (after the content, the agreements, retractions
  and erasures are checked again): the partner's liaison officers can pull it;
- a releasing officer of the drafting agency, or the drafter, can withdraw it at any time; the
  partner then sees only that it was withdrawn.

`check_*` functions decide whether an action is allowed; `SummaryBook.apply` folds the events, so
every gateway instance rebuilds the same state from the topic.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

from domain.callers import Caller

# Why an action is refused: the caller is not entitled to it, whatever the summary's state; or the
# summary's state (or what it would release) does not allow it now.
RefusalKind = Literal["not_entitled", "wrong_state"]


class ActionRefused(Exception):
    """An action the release rules refuse: `reason` names the rule (the audit's code), `kind` says whether
    the caller may not (`not_entitled`) or the summary is in the wrong state or its content moved
    (`wrong_state`)."""

    def __init__(self, reason: str, message: str, *, kind: RefusalKind = "not_entitled") -> None:
        super().__init__(message)
        self.reason = reason
        self.kind: RefusalKind = kind


@dataclass
class Summary:
    summary_id: str
    partner: str
    scope: str  # the release scope AGENCY>PARTNER
    signal_id: str  # the release scope's signal
    signal_version: int
    drafter: str  # the token subject: one person is the drafter under any of their roles, in the drafting agency
    drafter_agency: str
    content: dict[str, Any]
    report_ids: tuple[str, ...]
    consents_required: set[str]
    consents: set[str] = field(default_factory=set)
    approved_by: str | None = None
    status: str = "pending"  # pending | released | withdrawn
    released: bool = False  # was ever released (a withdrawal is then shown to the partner)

    @property
    def ready(self) -> bool:
        return self.approved_by is not None and self.consents_required <= self.consents

    def public(self) -> dict[str, Any]:
        """What the drafting agency's analysts and officers see: the whole draft."""
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

    def for_consenting(self, agency: str, own_content: dict[str, Any]) -> dict[str, Any]:
        """What a contributing agency's releasing officer sees: what the partner would learn from that
        agency's own reports, and whether that agency consented; nothing of the other contributors."""
        return {
            "summary_id": self.summary_id,
            "partner": self.partner,
            "status": self.status,
            "consent_required": agency in self.consents_required,
            "consented": agency in self.consents,
            "content": own_content,
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
            if not event.get("scope"):
                return  # drafted before release scopes: its content was not built from decided views
            self.summaries[sid] = Summary(
                summary_id=sid,
                partner=event["partner"],
                scope=event["scope"],
                signal_id=event["signal_id"],
                signal_version=event["signal_version"],
                drafter=event["actor"].partition(":")[2],  # the person, whatever role they drafted in
                drafter_agency=event["actor_agency"] or "",
                content=json.loads(event["content_json"] or "{}"),
                report_ids=tuple(event.get("report_ids") or ()),
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
            if event["content_json"]:
                summary.content = json.loads(event["content_json"])
        elif kind == "withdrawn":
            summary.status = "withdrawn"

    def pending(self) -> list[Summary]:
        return [s for s in self.summaries.values() if s.status == "pending"]


def same_person(a: str, b: str) -> bool:
    """Whether two token subjects name one person: compared canonically (Unicode NFKC, case-folded, inner
    spaces collapsed), so `Ana`, `ana ` and its full-width form cannot approve one another's drafts."""

    def canonical(subject: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", subject).casefold().split())

    return canonical(a) == canonical(b)


def concerns(summary: Summary, caller: Caller) -> bool:
    """Whether a summary is any of this caller's business: their agency drafted it, or must consent to it
    (releasing officers), or it is their partner's (liaison officers, once released)."""
    if caller.role == "liaison":
        return caller.partner == summary.partner and summary.released
    if caller.agency == summary.drafter_agency:
        return True
    return caller.role == "releasing_officer" and caller.agency in summary.consents_required


def check_consent(summary: Summary, caller: Caller) -> None:
    if summary.status != "pending":
        raise ActionRefused("not_pending", f"summary is {summary.status}", kind="wrong_state")
    if caller.agency not in summary.consents_required:
        raise ActionRefused("not_a_consenting_agency", "only a contributing agency that must consent can")


def check_approve(summary: Summary, caller: Caller) -> None:
    if summary.status != "pending":
        raise ActionRefused("not_pending", f"summary is {summary.status}", kind="wrong_state")
    if caller.agency != summary.drafter_agency:
        raise ActionRefused(
            "not_entitled_to_release", "only a releasing officer of the drafting agency, which sees all of it, approves"
        )
    if same_person(caller.subject, summary.drafter):
        raise ActionRefused("drafter_cannot_approve", "the drafter of a summary cannot approve it")
    if summary.approved_by is not None:
        raise ActionRefused("already_approved", "summary is already approved", kind="wrong_state")


def check_withdraw(summary: Summary, caller: Caller) -> None:
    if summary.status == "withdrawn":
        raise ActionRefused("already_withdrawn", "summary is already withdrawn", kind="wrong_state")
    officer = caller.role == "releasing_officer" and caller.agency == summary.drafter_agency
    drafter = caller.agency == summary.drafter_agency and same_person(caller.subject, summary.drafter)
    if not officer and not drafter:
        raise ActionRefused(
            "not_allowed_to_withdraw", "only a releasing officer of the drafting agency or the drafter can withdraw"
        )
