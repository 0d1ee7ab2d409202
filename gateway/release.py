"""The release workflow over the folds (domain/release.py holds the rules; gateway/routes/summaries.py
serves it).

A summary for partner P drafted by an analyst of agency A is one signal of the release scope A>P:
correlated only from reports both A and P may see (domain/scoped.py), and its content is what P's
decided views of those reports allow (policies/visibility.py). So the drafter sees everything that
goes out, and neither the drafter nor the partner is shown anything shaped by a report hidden from
either. Before a summary is approved or released, its content is computed again and the partner's
and originators' agreements are read again: anything retracted, erased, past retention or no longer
agreed stops the release (ActionRefused, wrong_state), and the drafter drafts again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from fastapi.encoders import jsonable_encoder

from domain.callers import Caller
from domain.read_models import ReadModels
from domain.release import ActionRefused, Summary
from domain.scoped import release_scope
from gateway.visibility import UNKNOWN, Visibility
from policies.loader import AGREEMENTS_DIR, load_directory
from policies.model import Agreement, OriginatorAgreement
from policies.visibility import Visible, partner_content


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


def candidates(views: ReadModels, caller: Caller, record: dict[str, Any], partner: str) -> list[dict[str, Any]]:
    """The release scope's open signals for the same requirement that share reports with the caller's
    signal, most shared first."""
    mine = set(record["report_ids"])
    found = [
        r
        for r in views.latest_signals(release_scope(caller.acts_for, partner), "open")
        if r["requirement_id"] == record["requirement_id"] and mine & set(r["report_ids"])
    ]
    return sorted(found, key=lambda r: (-len(mine & set(r["report_ids"])), r["signal_id"]))


def releasable(views: ReadModels, caller: Caller, partner: str) -> list[dict[str, Any]]:
    """The open signals of the release scope of the caller's agency and `partner`."""
    return views.latest_signals(release_scope(caller.acts_for, partner), "open")  # by signal id


def draft_summary(
    views: ReadModels,
    caller: Caller,
    partner: str,
    chosen: dict[str, Any],
    content: dict[str, Any],
    agreements_dir: Any,
) -> Summary:
    """A new draft of `chosen` for `partner`: every contributing agency not pre-authorising release to the
    partner must consent."""
    authorised = pre_authorised(agreements_dir)
    sources = {_agency(views, r) for r in chosen["report_ids"]}
    return Summary(
        summary_id="sum-" + uuid.uuid4().hex[:20],
        partner=partner,
        scope=release_scope(caller.acts_for, partner),
        signal_id=chosen["signal_id"],
        signal_version=chosen["version"],
        drafter=caller.subject,
        drafter_agency=caller.acts_for,
        content=content,
        report_ids=tuple(chosen["report_ids"]),
        consents_required={a for a in sources if partner not in authorised.get(a, frozenset())},
    )


def recheck(views: ReadModels, visibility: Visibility, agreements_dir: Any, summary: Summary) -> None:
    """Before a summary is approved or released: its content is still what the partner would receive
    now, and the partner's and every contributor's agreements still let it go."""
    now = datetime.now(UTC)
    current = views.latest_signal(summary.scope, summary.signal_id)
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
        source = _agency(views, report_id)
        held = originators.get(source)
        if held is None or summary.partner not in held.foreign_release:
            raise ActionRefused(
                "originator_withholds",
                f"{source} no longer releases its reports to {summary.partner}",
                kind="wrong_state",
            )


def shown_to(views: ReadModels, caller: Caller, summary: Summary) -> dict[str, Any]:
    """A summary as the caller sees it: the drafting agency whole, a consenting agency its own part."""
    if caller.agency == summary.drafter_agency:
        return summary.public()
    own = [r for r in summary.report_ids if (h := views.header(r)) is not None and h.agency == caller.agency]
    return summary.for_consenting(caller.agency or "", {"your_reports": own, "report_count": len(own)})


def _agency(views: ReadModels, report_id: str) -> str:
    """The agency of a report a signal names: accepted before any signal names it."""
    header = views.header(report_id)
    if header is None:
        raise LookupError(f"report {report_id} of a signal is not among the accepted reports")
    return header.agency


def summary_event(summary: Summary, kind: str, caller: Caller) -> dict[str, Any]:
    """The lifecycle event of one step of a summary's life, as written to tip.summaries."""
    return {
        "event_id": str(uuid.uuid4()),
        "summary_id": summary.summary_id,
        "kind": kind,
        "partner": summary.partner,
        "signal_id": summary.signal_id,
        "signal_version": summary.signal_version,
        "actor": f"{caller.role}:{caller.subject}",
        "actor_agency": caller.agency,
        "at": datetime.now(UTC),
        "content_json": json.dumps(summary.content, sort_keys=True) if kind in ("drafted", "released") else None,
        "consents_required": sorted(summary.consents_required) if kind == "drafted" else [],
        "scope": summary.scope,
        "report_ids": list(summary.report_ids) if kind == "drafted" else [],
    }
