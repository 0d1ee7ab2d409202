"""What a caller may see now, read from the read models (domain/read_models.py).

A caller is served only from their own scope (their agency or partner, `acts_for`): its signals were
correlated from the reports the caller may see (domain/scoped.py), and each is shown through the
caller's decisions as they stand now (policies/visibility.py): a report retracted, or past the
retention of the caller's agreement, is left out of every version, and every field follows the
caller's field rules. An agency always sees its own reports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from domain.facts import ReportHeader
from domain.read_models import Decided, ReadModels
from gateway.errors import NotVisible
from policies.engine import decide
from policies.model import AgreementSet
from policies.visibility import Visible, render_signal

UNKNOWN = object()  # not known yet: its accepted record or the caller's decision is still on its way


class Lookups(Protocol):
    """What deciding visibility looks up: the read models, or the facts of one page read at once
    (domain/read_models.py, PageFacts)."""

    def header(self, report_id: str) -> ReportHeader | None: ...

    def retracted(self, report_id: str) -> bool: ...

    def decision(self, recipient: str, report_id: str) -> Decided | None: ...

    def triage_state(self, signal_id: str) -> str: ...


class Visibility:
    """Reports and signal versions as one scope may see them now."""

    def __init__(self, views: ReadModels) -> None:
        self.views = views

    def visible(
        self, acts_for: str, report_id: str, now: datetime | None = None, lookups: Lookups | None = None
    ) -> Visible | object | None:
        """The report as `acts_for` may see it now; None if it may not; UNKNOWN if not decidable yet."""
        views = lookups or self.views
        facts = views.header(report_id)
        if facts is None:
            return UNKNOWN
        if views.retracted(report_id):
            return None
        if facts.agency == acts_for:
            return Visible(facts, own=True)
        decided = views.decision(acts_for, report_id)
        if decided is None:
            return UNKNOWN
        return Visible(facts, decided.rules) if decided.in_force(now or datetime.now(UTC)) else None

    def render(
        self, acts_for: str, record: dict[str, Any], now: datetime | None = None, lookups: Lookups | None = None
    ) -> dict[str, Any] | object | None:
        """A signal version as `acts_for` sees it now (None: nothing of it; UNKNOWN: wait for its reports)."""
        now = now or datetime.now(UTC)
        visible: dict[str, Visible | None] = {}
        for report_id in record["report_ids"]:
            found = self.visible(acts_for, report_id, now, lookups)
            if found is UNKNOWN:
                return UNKNOWN
            visible[report_id] = found if isinstance(found, Visible) else None
        return render_signal(record, visible, (lookups or self.views).triage_state(record["signal_id"]))

    def page_lookups(self, acts_for: str, records: Sequence[dict[str, Any]]) -> Lookups:
        """The facts rendering these versions for `acts_for` needs, read at once."""
        report_ids = {report_id for record in records for report_id in record["report_ids"]}
        return self.views.page_facts(acts_for, report_ids, {record["signal_id"] for record in records})

    def own_signal(self, acts_for: str, signal_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(latest record, as `acts_for` sees it) of a signal of its own scope; NotVisible for any other id
        (another scope's, or none at all: the answer is the same)."""
        record = self.views.latest_signal(acts_for, signal_id)
        shown = self.render(acts_for, record) if record is not None else None
        if record is None or not isinstance(shown, dict):
            raise NotVisible("no such signal visible to this caller")
        return record, shown

    def report_view(
        self, acts_for: str, report_id: str, now: datetime | None = None
    ) -> tuple[Any, list[dict[str, Any]]] | None:
        """(view with ciphertext references, its field decisions) of a report the caller may see now, as the
        policy engine decided it for them: an agency's own report in full, others by their decision."""
        found = self.visible(acts_for, report_id, now)
        if not isinstance(found, Visible):
            return None
        accepted = self.views.accepted(report_id)
        assert accepted is not None  # visible: its header was found
        if found.own:
            erased = self.views.erased()
            decision = decide(accepted, acts_for, AgreementSet(), accepted["accepted_at"], erased)
            fields = [{"path": f.path, "field": f.field, "rule": f.rule, "basis": f.basis} for f in decision.fields]
            return decision.view, fields
        decided = self.views.decision(acts_for, report_id)
        if decided is None or not decided.view_json:
            return None
        return json.loads(decided.view_json), [dict(f) for f in decided.fields]
