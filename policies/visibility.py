"""What a caller is shown of a signal: only the reports it may see now, each as the policy engine
decided it for that caller, and every derived field (agencies, dates, elements, minor, score) under
the weakest rule any of those reports' decisions applied to the fields it derives from.

The signal itself comes from the caller's own scope (domain/scoped.py): correlated from what the
caller may see. This module adds what time and field rules take away after correlation: a report
retracted or past its retention since the version was written is left out, and a field the
caller's agreement generalises or drops is generalised or left out of every aggregate too (a
partner whose dates are generalised to the month never sees an exact first or last date). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.facts import ReportHeader
from policies.model import Rule
from schemas.elements import groups_covered

RANK: dict[str, int] = {"drop": 0, "generalise": 1, "share": 2}
# The fields of a report each derived field of a signal is computed from.
SCORE_FIELDS = ("source_reliability", "info_credibility", "observed_at", "source_agency", "elements")


@dataclass(frozen=True)
class Visible:
    """One report as a caller may see it now: its facts and the rule its decision gave each field
    (an agency's own report: every field shared)."""

    facts: ReportHeader
    rules: Mapping[str, Rule] = field(default_factory=dict)
    own: bool = False

    def rule(self, field_key: str) -> Rule:
        if self.own:
            return "share"
        return self.rules.get(field_key, "share")  # a field the report does not have restricts nothing

    def within(self, other: Visible) -> Visible:
        """The report under the weaker of two callers' rules, field by field: what goes to one must not show
        the other (a summary's drafter reviews all of it) more than its own decision does."""
        if other.own:
            return self
        if self.own:
            return other
        keys = set(self.rules) | set(other.rules)
        return Visible(self.facts, {k: min(self.rule(k), other.rule(k), key=RANK.__getitem__) for k in keys})


def field_rules(fields: Iterable[Mapping[str, Any]]) -> dict[str, Rule]:
    """Per agreement field key, the weakest rule a decision gave any of its paths."""
    out: dict[str, Rule] = {}
    for decided in fields:
        key, rule = decided["field"], decided["rule"]
        if key not in out or RANK[rule] < RANK[out[key]]:
            out[key] = rule
    return out


def weakest(reports: Sequence[Visible], field_key: str) -> Rule:
    return min((r.rule(field_key) for r in reports), key=RANK.__getitem__, default="share")


def _month(moment: datetime) -> str:
    return moment.strftime("%Y-%m")


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def dates(reports: Sequence[Visible]) -> tuple[str | None, str | None]:
    """First and last seen under the weakest observed_at rule: exact, the month, or not at all."""
    rule = weakest(reports, "observed_at")
    if rule == "drop":
        return None, None
    seen = sorted(r.facts.observed_at for r in reports)
    show = _iso if rule == "share" else _month
    return show(seen[0]), show(seen[-1])


def agencies(reports: Sequence[Visible]) -> list[str] | None:
    """Each report's source under its own rule: the agency, its sector, or not at all."""
    shown: set[str] = set()
    for report in reports:
        rule = report.rule("source_agency")
        if rule == "share":
            shown.add(report.facts.agency)
        elif rule == "generalise":
            shown.add(report.facts.agency.split("-", 1)[0])
    return sorted(shown) if shown or not reports else None


def elements(reports: Sequence[Visible]) -> list[str] | None:
    found = {e for r in reports if r.rule("elements") == "share" for e in r.facts.elements}
    return sorted(found) if any(r.rule("elements") == "share" for r in reports) else None


def render_signal(
    record: Mapping[str, Any], visible: Mapping[str, Visible | None], triage_state: str | None = None
) -> dict[str, Any] | None:
    """A signal version as a caller may see it now; None if none of its reports is visible.

    `visible` maps each of the record's report ids to the report as the caller may see it, or None if
    the caller may not (any more). Every id must be present (the caller decides whether to wait)."""
    shown = [visible[r] for r in record["report_ids"] if visible[r] is not None]
    reports = [r for r in shown if r is not None]
    if not reports:
        return None
    complete = len(reports) == len(record["report_ids"])
    first, last = dates(reports)
    found = elements(reports)
    exact = complete and all(weakest(reports, f) == "share" for f in SCORE_FIELDS)
    out = {
        "signal_id": record["signal_id"],
        "version": record["version"],
        "requirement_id": record["requirement_id"],
        "entity": record["entity"],
        "status": record["status"],
        "merged_into": record["merged_into"],
        "report_ids": [r.facts.report_id for r in reports],
        "report_count": len(reports),
        "agencies": agencies(reports),
        "elements": found,
        "act_means_purpose": sorted(groups_covered(found)) if found is not None else None,
        "minor_involved": record["minor_involved"]
        if complete and weakest(reports, "subjects.minor") == "share"
        else None,
        "score": record["score"] if exact else None,
        "first_seen": first,
        "last_seen": last,
        "updated_at": _iso(record["updated_at"]),
    }
    if triage_state is not None:
        out["triage_state"] = triage_state
    return out


def partner_content(record: Mapping[str, Any], reports: Sequence[Visible]) -> dict[str, Any]:
    """What a partner receives in a summary of its own signal: aggregates under its field rules, with
    the signal's id in the partner's own scope, and nothing else (no report ids, no score, no entity,
    no analyst's triage)."""
    first, last = dates(reports)
    found = elements(reports)
    return {
        "signal_id": record["signal_id"],
        "requirement_id": record["requirement_id"],
        "report_count": len(reports),
        "agencies": agencies(reports),
        "elements": found,
        "act_means_purpose": sorted(groups_covered(found)) if found is not None else None,
        "minor_involved": record["minor_involved"] if weakest(reports, "subjects.minor") == "share" else None,
        "first_seen": first,
        "last_seen": last,
    }
