"""One fold per tailed topic: each turns its topic's events, oldest first, into what the gateway serves.

A fold sees a decoded event (where it sits in its topic, its schema's name, its value) and nothing of
the Kafka client that read it; gateway/views.py hands each record to the fold of its topic. A fold
starts empty and reads its topic from the beginning: every gateway start rebuilds it so.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from domain.facts import ReportHeader, header_of
from domain.release import SummaryBook
from domain.scoped import HUB_SCOPE
from domain.withdrawals import Kind, Withdrawals
from policies.model import Rule
from policies.visibility import field_rules


@dataclass(frozen=True)
class Event:
    """One decoded record of a tailed topic."""

    partition: int
    offset: int
    schema: str  # the name of the record's registered schema, e.g. tiphub.AcceptedReport
    value: dict[str, Any]


class Fold(Protocol):
    def apply(self, event: Event) -> None: ...


# -- tip.signals ---------------------------------------------------------------------------
@dataclass
class ScopeFeed:
    """One scope's signal versions in feed order (by seq), and the latest version of each signal."""

    versions: list[dict[str, Any]] = field(default_factory=list)
    waiting: dict[int, dict[str, Any]] = field(default_factory=dict)  # arrived ahead of a gap
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        seq = record["seq"]
        if seq <= len(self.versions) or seq in self.waiting:
            return  # seen (a transaction's records can be read again after a gateway restart)
        self.waiting[seq] = record
        while len(self.versions) + 1 in self.waiting:
            ready = self.waiting.pop(len(self.versions) + 1)
            self.versions.append(ready)
            held = self.latest.get(ready["signal_id"])
            if held is None or ready["version"] > held["version"]:
                self.latest[ready["signal_id"]] = ready


@dataclass
class SignalFeeds:
    """Each scope's feed of signal versions. The hub's own scope is served to nobody, so not kept."""

    by_scope: dict[str, ScopeFeed] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        value = event.value
        if value["scope"] != HUB_SCOPE and value["seq"] > 0:
            self.by_scope.setdefault(value["scope"], ScopeFeed()).add(value)

    def feed(self, scope: str) -> ScopeFeed | None:
        return self.by_scope.get(scope)

    def latest(self, scope: str, signal_id: str) -> dict[str, Any] | None:
        feed = self.by_scope.get(scope)
        return feed.latest.get(signal_id) if feed else None

    def versions_held(self) -> int:
        return sum(len(feed.versions) for feed in self.by_scope.values())


# -- tip.decisions -------------------------------------------------------------------------
@dataclass(frozen=True)
class Decided:
    """The latest sharing decision for one (recipient, report)."""

    allowed: bool
    retain_until: datetime | None
    rules: dict[str, Rule]
    view_json: str | None
    fields: tuple[dict[str, Any], ...]  # per concrete path: the rule and the clause that decided it

    def in_force(self, now: datetime) -> bool:
        return self.allowed and (self.retain_until is None or self.retain_until > now)


@dataclass
class Decisions:
    """The latest sharing decision of each (recipient, report); decisions on other kinds of item are not
    the gateway's."""

    latest: dict[tuple[str, str], Decided] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        value = event.value
        if value.get("item_kind") != "report":
            return
        self.latest[(value["recipient"], value["item_id"])] = Decided(
            allowed=bool(value["allowed"]),
            retain_until=value.get("retain_until"),
            rules=field_rules(value.get("fields") or []),
            view_json=value.get("view_json"),
            fields=tuple(value.get("fields") or ()),
        )

    def get(self, recipient: str, report_id: str) -> Decided | None:
        return self.latest.get((recipient, report_id))

    def counts(self) -> dict[tuple[str, bool], int]:
        """How many reports each recipient was decided to be shown (True) or not (False)."""
        counts: dict[tuple[str, bool], int] = {}
        for (recipient, _), decided in list(self.latest.items()):
            counts[(recipient, decided.allowed)] = counts.get((recipient, decided.allowed), 0) + 1
        return counts


# -- tip.reports.accepted ------------------------------------------------------------------
@dataclass
class AcceptedReports:
    """Each accepted report as the accept stage wrote it (sealed fields stay sealed until a view opens
    them), its non-sensitive facts, and which people (subject keys, linkage tokens) it names."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    facts: dict[str, ReportHeader] = field(default_factory=dict)
    reports_by_subject_key: dict[str, set[str]] = field(default_factory=dict)
    subject_keys_by_token: dict[str, set[str]] = field(default_factory=dict)  # linkage token -> subject key ids

    def apply(self, event: Event) -> None:
        if event.schema != "tiphub.AcceptedReport":
            return
        value = event.value
        report_id = value["report_id"]
        self.records[report_id] = value
        self.facts[report_id] = header_of(value)
        bridges = value.get("linkage_bridges") or []  # earlier key versions (a rotation's overlap)
        for i, subject in enumerate(value["subjects"]):
            key = subject["subject_key_id"]
            self.reports_by_subject_key.setdefault(key, set()).add(report_id)
            tokens = [identifier["linkage_token"] for identifier in subject["identifiers"]]
            tokens += [t for bridge in bridges for t in bridge["subjects"][i]["identifier_tokens"]]
            for token in tokens:
                self.subject_keys_by_token.setdefault(token, set()).add(key)

    def agency_of(self, report_id: str) -> str | None:
        facts = self.facts.get(report_id)
        return facts.agency if facts else None


# -- tip.reports.rejected ------------------------------------------------------------------
@dataclass
class Rejections:
    """Every rejection in log order (partition, offset, event), and the latest per (agency, report id)."""

    log: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    latest: dict[tuple[str | None, str], dict[str, Any]] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        if event.schema != "tiphub.RejectedReport":
            return
        self.log.append((event.partition, event.offset, event.value))
        self.latest[(event.value["source_agency"], event.value["report_id"])] = event.value


# -- tip.summaries -------------------------------------------------------------------------
class PartnerEvent(NamedTuple):
    partition: int
    offset: int
    summary_id: str
    kind: str  # released | withdrawn
    at: datetime


@dataclass
class SummaryLog:
    """The partner summaries (the release rules' fold, domain/release.py), and what partners see of them:
    releases and withdrawals, in log order."""

    book: SummaryBook = field(default_factory=SummaryBook)
    partner_log: list[PartnerEvent] = field(default_factory=list)

    def apply(self, event: Event) -> None:
        if event.schema != "tiphub.SummaryEvent":
            return
        value = event.value
        self.book.apply(value)
        if value["kind"] in ("released", "withdrawn"):
            self.partner_log.append(
                PartnerEvent(event.partition, event.offset, value["summary_id"], value["kind"], value["at"])
            )


# -- tip.triage ----------------------------------------------------------------------------
@dataclass
class TriageLog:
    """Each signal's triage events, oldest first."""

    by_signal: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # event ids

    def apply(self, event: Event) -> None:
        if event.schema != "tiphub.TriageEvent" or event.value["event_id"] in self.seen:
            return
        self.seen.add(event.value["event_id"])
        self.by_signal.setdefault(event.value["signal_id"], []).append(event.value)

    def events(self, signal_id: str) -> list[dict[str, Any]]:
        return self.by_signal.get(signal_id, [])

    def state(self, signal_id: str) -> str:
        return str(self.by_signal.get(signal_id, [{"state": "new"}])[-1]["state"])


# -- tip.coverage --------------------------------------------------------------------------
@dataclass
class CoverageBoard:
    """The latest Collection Plan coverage of each scope, per requirement (counts only)."""

    by_scope: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        if event.schema == "tiphub.Coverage":
            self.by_scope.setdefault(event.value["scope"], {})[event.value["requirement_id"]] = event.value


# -- tip.erasures and tip.retractions ------------------------------------------------------
WITHDRAWAL_SCHEMAS: dict[str, Kind] = {"tiphub.SubjectErased": "erased", "tiphub.ReportRetracted": "retracted"}


@dataclass
class Withdrawn:
    """The people erased (whatever was sealed under their keys reads as erased) and the reports their
    agencies retracted (shown to nobody any more), folded as every stage folds them."""

    seen: Withdrawals = field(default_factory=Withdrawals)

    @property
    def erased(self) -> Collection[str]:
        return self.seen.erased.keys()

    @property
    def retracted(self) -> Collection[str]:
        return self.seen.retracted.keys()


@dataclass
class WithdrawalFold:
    """The fold of one of the two topics into `Withdrawn`: only facts of the topic's own kind count."""

    withdrawn: Withdrawn
    kind: Kind

    def apply(self, event: Event) -> None:
        if WITHDRAWAL_SCHEMAS.get(event.schema) == self.kind:
            self.withdrawn.seen.fold(event.value, self.kind)
