"""What the gateway serves, as a port: read models folded from the tailed topics into an indexed store, each
batch written with the topic positions it reached in one transaction, so a gateway restart resumes where it
was instead of reading history again; and every query answered by index, in time that follows the page, not
the history.

The SQL adapter (adapters/sql/read_models.py) implements it on SQLite (the default, a file under the hub's
home) and on PostgreSQL (several gateway instances sharing one store). What a caller is shown of it is
decided in the gateway (gateway/visibility.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from domain.facts import ReportHeader, Rule
from domain.log import Record
from domain.release import Summary

# A store written in another format is rebuilt from the topics, not read (3: an agency's submissions; 4: the
# audit's fields as columns, to filter on).
READ_MODEL_FORMAT = 4


@dataclass(frozen=True)
class Decided:
    """The latest sharing decision for one (recipient, report)."""

    allowed: bool
    retain_until: datetime | None
    rules: Mapping[str, Rule]  # per agreement field key, the weakest rule any of its paths was given
    view_json: str | None
    fields: tuple[dict[str, Any], ...]  # per concrete path: the rule and the clause that decided it

    def in_force(self, now: datetime) -> bool:
        return self.allowed and (self.retain_until is None or self.retain_until > now)


@dataclass(frozen=True)
class PartnerEvent:
    """A release or withdrawal of one of a partner's summaries, where it sits on tip.summaries."""

    partition: int
    offset: int
    summary_id: str
    kind: str  # released | withdrawn
    at: datetime


@dataclass(frozen=True)
class AuditFilter:
    """Which audit events an auditor asks for: each field given must match (`actor` by its beginning, so that
    `analyst:` selects every analyst); `since` and `until` bound `at`."""

    kind: str | None = None
    actor: str | None = None
    recipient: str | None = None
    outcome: str | None = None
    item: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def record_digest(value: bytes | None) -> str:
    """What a position remembers of the record before it: a topic recreated under the same name since holds
    another record there (values carry times and ids), and a store is not trusted on it."""
    return hashlib.sha256(value or b"").hexdigest()[:32]


Position = list[int]  # one offset per partition: where a caller's page of a topic-ordered log resumes


@dataclass(frozen=True)
class PageFacts:
    """What showing a page of signal versions to one scope looks up, read for the whole page at once (a few
    queries per page, not several per report): the headers of the reports the versions name, which of them
    are retracted, the scope's decisions on them, and the signals' triage states. It answers the same
    questions as the read models, for those reports and signals only."""

    acts_for: str
    headers: Mapping[str, ReportHeader]
    retracted_ids: frozenset[str]
    decisions: Mapping[str, Decided]
    triage: Mapping[str, str]

    def header(self, report_id: str) -> ReportHeader | None:
        return self.headers.get(report_id)

    def retracted(self, report_id: str) -> bool:
        return report_id in self.retracted_ids

    def decision(self, recipient: str, report_id: str) -> Decided | None:
        if recipient != self.acts_for:
            raise ValueError(f"these facts are {self.acts_for}'s, not {recipient}'s")
        return self.decisions.get(report_id)

    def triage_state(self, signal_id: str) -> str:
        return self.triage.get(signal_id, "new")


class ReadModels(Protocol):
    # -- folding ---------------------------------------------------------------------------
    def positions(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition): the offset of the next record to fold (what the tail resumes from)."""

    def last_folded(self) -> dict[tuple[str, int], tuple[int, str]]:
        """Per (topic, partition): the offset and digest of the last record folded, to check at start that the
        topic still holds it (a topic recreated under the same name does not)."""

    def apply(self, records: Sequence[Record]) -> None:
        """Fold a batch of tailed records, and the positions after them, in one transaction. A record read
        again (a restart, another gateway on the same store) changes nothing."""

    def wipe(self) -> None:
        """Forget everything folded: the next tail reads every topic from its beginning."""

    def expire(self, now: datetime) -> int:
        """Retention on serving: drop the decided views whose retention has passed; how many went."""

    def folded(self, event_id: str) -> bool:
        """Whether a summary or triage event (one this gateway wrote, say) has been folded."""

    # -- tip.reports.accepted --------------------------------------------------------------
    def header(self, report_id: str) -> ReportHeader | None: ...

    def accepted(self, report_id: str) -> dict[str, Any] | None:
        """The accepted record as the accept stage wrote it (sealed fields stay sealed)."""

    def subject_keys(self, linkage_token: str) -> set[str]:
        """The subject keys of the people any accepted report names with this token."""

    def reports_naming(self, subject_keys: Collection[str]) -> set[str]: ...

    # -- tip.erasures, tip.retractions -----------------------------------------------------
    def retracted(self, report_id: str) -> bool: ...

    def erased(self) -> frozenset[str]:
        """The subject key ids erased (whatever was sealed under them reads as erased)."""

    # -- tip.decisions ---------------------------------------------------------------------
    def decision(self, recipient: str, report_id: str) -> Decided | None: ...

    def decision_counts(self) -> dict[tuple[str, bool], int]:
        """How many reports each recipient was decided to be shown (True) or not (False)."""

    # -- tip.signals -----------------------------------------------------------------------
    def signal_versions(self, scope: str, after: int, limit: int) -> list[dict[str, Any]]:
        """The scope's signal versions after feed position `after` (a version's seq is its position), in
        feed order, up to the first gap (a version read ahead of an earlier one waits for it)."""

    def latest_signal(self, scope: str, signal_id: str) -> dict[str, Any] | None: ...

    def latest_signals(self, scope: str, status: str) -> list[dict[str, Any]]:
        """The latest version of every signal of the scope in this status (release scopes: small)."""

    def versions_held(self) -> int: ...

    def submissions(
        self, agency: str, after: tuple[int, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
        """The agency's accepted reports (report id, type, when observed) after `after`, by when
        they were observed then by id, and the last one's (observed, in microseconds; report id). An order of
        the agency's own data only: no other agency's report, wherever it landed in the log, moves it."""

    # -- tip.reports.rejected --------------------------------------------------------------
    def rejection(self, agency: str | None, report_id: str) -> dict[str, Any] | None:
        """The latest rejection of a submission of this report id that claimed this agency."""

    def rejections(self, agency: str, after: Position, limit: int) -> tuple[list[dict[str, Any]], Position]:
        """Rejections of submissions claiming the agency after `after`, in log order, and where the next page
        starts."""

    # -- tip.summaries ---------------------------------------------------------------------
    def summary(self, summary_id: str) -> Summary | None: ...

    def pending_summaries(self) -> list[Summary]: ...

    def partner_events(
        self, partner: str, after: Position, limit: int
    ) -> tuple[list[tuple[PartnerEvent, Summary]], Position]:
        """Releases and withdrawals of the partner's summaries after `after`, in log order."""

    # -- tip.triage, tip.coverage ----------------------------------------------------------
    def triage_events(self, signal_id: str) -> list[dict[str, Any]]: ...

    def triage_state(self, signal_id: str) -> str: ...

    def page_facts(self, acts_for: str, report_ids: Collection[str], signal_ids: Collection[str]) -> PageFacts:
        """Everything showing these reports and signals to `acts_for` looks up, in a few queries."""

    def coverage(self, scope: str) -> dict[str, dict[str, Any]]: ...

    # -- tip.audit -------------------------------------------------------------------------
    def audit_events(
        self, after: Position, limit: int, where: AuditFilter | None = None
    ) -> tuple[list[tuple[int, dict[str, Any]]], Position]:
        """(partition, AuditEvent) of the chain's authentic entries after `after` that `where` selects, oldest
        first."""

    def audit_mentioning(self, keys: Collection[str]) -> list[dict[str, Any]]:
        """The authentic AuditEvents that name any of these subject keys or report ids, oldest first."""

    def close(self) -> None: ...
