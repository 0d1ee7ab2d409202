"""Correlation per scope: what a caller is shown is correlated from the reports that caller may see.

A scope is an agency or a partner (a caller's `acts_for`). Its reports are the agency's own and
those the policy engine decided to share with it (allowed decisions on tip.decisions, until their
`retain_until`). Each scope has its own entity resolution, signals, versions and coverage, so a
report a caller may not see changes nothing that caller can observe: not whether two people are
one, not whether a signal exists, not a version number, a score, a count or a date. Correlating
once over every report and filtering afterwards cannot promise that: a hidden report can join two
visible people, make a requirement answered, or take the smallest member of an entity (and with it
the signal's id).

The `hub` scope holds every accepted report: the hub's own evaluation (`tiphub eval`, the bench).
No caller is ever served it.

A release scope `A>P` holds the reports that both an agency (or domestic recipient) A and a partner
P may see. A summary for P drafted by A's analysts is one of its signals (gateway/release.py): made
only of what both sides may see, grouped only by evidence both may see, so neither the drafter nor
the partner learns anything of a report hidden from either.

Signal ids and entity pseudonyms are keyed per scope (`ScopeNames`): two scopes' ids for one
person cannot be matched, and nobody without the hub's pseudonym key can recompute an id from a
report id. Pure logic: the union stage (streams/agents/correlate_signals.py) feeds it and writes
what it returns.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from streams.correlate import Correlator, ReportFacts, Requirement, Signal, SignalBook

if TYPE_CHECKING:
    from streams.linking import Link

HUB_SCOPE = "hub"
RELEASE = ">"  # release scopes are named AGENCY>PARTNER


def release_scope(agency: str, partner: str) -> str:
    return f"{agency}{RELEASE}{partner}"


class ScopeNames:
    """Keyed names of one scope's signals and entities (HMAC-SHA256 under the hub's pseudonym key)."""

    def __init__(self, key: bytes, scope: str) -> None:
        self._key = key
        self.scope = scope

    def _mac(self, kind: str, *parts: str) -> str:
        message = "|".join(("tiphub/pseudonym/v1", kind, self.scope, *parts)).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def signal_id(self, requirement_id: str, entity_key: str) -> str:
        return "sig-" + self._mac("signal", requirement_id, entity_key)[:20]

    def entity(self, entity_key: str) -> str:
        return "ent-" + self._mac("entity", entity_key)[:16]


@dataclass(frozen=True)
class Emitted:
    """One signal version to write, with its place in its scope's feed (`seq`, gapless from 1)."""

    scope: str
    seq: int
    version: int
    signal: Signal


@dataclass
class _Scope:
    """One scope's correlator and signal book, and what the current batch changed in it."""

    name: str
    correlator: Correlator
    book: SignalBook = field(default_factory=SignalBook)
    seq: int = 0
    held: dict[str, datetime | None] = field(default_factory=dict)  # report_id -> retain_until (None: no end)
    full: bool = True  # re-evaluate everything at the next flush (restored, or a report left)
    keys: dict[str, set[str]] = field(default_factory=dict)
    absorbed: dict[str, str] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    stale: list[Signal] = field(default_factory=list)
    coverage: dict[str, dict[str, Any]] = field(default_factory=dict)  # as last written

    def note(self, touched: set[str], report_id: str | None) -> None:
        self.absorbed.update(self.correlator.absorbed)
        self.touched |= touched
        if report_id is not None and report_id not in self.correlator.reports:
            return
        for kind, entity_keys in self.correlator.affected(report_id, touched).items():
            self.keys.setdefault(kind, set()).update(entity_keys)

    def add(self, facts: ReportFacts, links: dict[str, set[str]], retain_until: datetime | None) -> None:
        if facts.report_id in self.held:
            self.held[facts.report_id] = _later(self.held[facts.report_id], retain_until)
            return
        self.held[facts.report_id] = retain_until
        for occ in facts.people:
            self.correlator.links[occ.occ_id] |= links.get(occ.occ_id, set())
        self.note(self.correlator.add(facts), facts.report_id)

    def link(self, link: Link) -> None:
        """A link between two people this scope holds (when one end arrives later, `add` brings it)."""
        if link.a in self.correlator.occurrences and link.b in self.correlator.occurrences:
            self.note(self.correlator.add_links([link]), None)

    def remove(self, report_ids: set[str]) -> None:
        """Reports this scope may no longer see (retention over, decision withdrawn): as if never here."""
        gone = report_ids & self.held.keys()
        if gone:
            for report_id in gone:
                del self.held[report_id]
            self.correlator.retract(gone)
            self.absorbed.update(self.correlator.absorbed)
            self.full = True

    def forget(self, erased: set[str], retracted: set[str]) -> None:
        """People erased and reports retracted leave every entity (rare: the scope is re-evaluated whole)."""
        self.correlator.erased |= erased
        self.correlator.retract(retracted)
        for report_id in retracted:
            self.held.pop(report_id, None)
        self.absorbed.update(self.correlator.absorbed)
        self.full = True

    def flush(self) -> list[tuple[int, Signal]]:
        if self.full:
            results: dict[tuple[str, str], Signal | None] = dict.fromkeys(self.book.by_entity)
            results.update(self.correlator.evaluate())
        else:
            results = dict(self.correlator.evaluate_keys(self.keys))
        final: dict[str, str] = {}
        for old, new in self.absorbed.items():  # an absorbed entity may itself have been absorbed later
            seen = {old}
            while new in self.absorbed and self.absorbed[new] != new and new not in seen:
                seen.add(new)
                new = self.absorbed[new]
            final[old] = new
        emitted = self.book.apply(results, final)
        for signal in self.stale:
            emitted += self.book.put(Signal(**{**signal.__dict__, "status": "closed"}))
        self.stale = []
        self.full, self.keys, self.absorbed = False, {}, {}
        return emitted


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return None if a is None or b is None else max(a, b)


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


class ScopedCorrelation:
    """Every scope's correlation, fed with accepted reports, sharing decisions, links and facts.

    `partners`: the foreign recipients; each pairs with every other scope into a release scope."""

    def __init__(
        self,
        plan: list[Requirement],
        pseudonym_key: bytes,
        partners: Iterable[str] = (),
        contact_limit: int = 3,
    ) -> None:
        self.plan = plan
        self.key = pseudonym_key
        self.partners = frozenset(partners)
        self.contact_limit = contact_limit
        self.scopes: dict[str, _Scope] = {}
        self.facts: dict[str, ReportFacts] = {}
        self.links: dict[str, set[str]] = defaultdict(set)  # occurrence -> occurrences it is linked to
        self.grants: dict[str, dict[str, datetime | None]] = defaultdict(dict)  # report -> scope -> retain_until
        self.erased: set[str] = set()
        self.retracted: set[str] = set()

    def scope(self, name: str) -> _Scope:
        found = self.scopes.get(name)
        if found is None:
            correlator = Correlator(
                self.plan,
                contact_limit=self.contact_limit,
                external_links=True,
                names=ScopeNames(self.key, name),
            )
            correlator.erased |= self.erased
            correlator.retracted |= self.retracted
            found = self.scopes[name] = _Scope(name, correlator)
        return found

    @property
    def hub(self) -> _Scope:
        return self.scope(HUB_SCOPE)

    def _grant(self, name: str, facts: ReportFacts, retain_until: datetime | None) -> None:
        """The report is visible to `name`: into its scope, and into every release scope whose other side
        sees it too (until the earlier of the two ends)."""
        self.scope(name).add(facts, self.links, retain_until)
        if name == HUB_SCOPE or RELEASE in name:
            return
        report_id = facts.report_id
        others = (
            [s for s in self.scopes.values() if s.name not in self.partners and s.name != HUB_SCOPE]
            if name in self.partners
            else [self.scopes[p] for p in sorted(self.partners) if p in self.scopes]
        )
        for other in others:
            if RELEASE in other.name or report_id not in other.held:
                continue
            agency, partner = (other.name, name) if name in self.partners else (name, other.name)
            until = _earlier(self.scopes[name].held[report_id], other.held[report_id])
            self.scope(release_scope(agency, partner)).add(facts, self.links, until)

    def _revoke(self, name: str, report_id: str) -> None:
        """The report is no longer visible to `name`: out of its scope and of the release scopes it is in."""
        for scope in list(self.scopes.values()):
            if scope.name == name or (RELEASE in scope.name and name in scope.name.split(RELEASE)):
                scope.remove({report_id})

    # -- facts arriving --------------------------------------------------------------------
    def accept(self, facts: ReportFacts, now: datetime) -> None:
        """An accepted report: it is in the hub's scope and its agency's, and in every scope a decision
        already shared it with."""
        if facts.report_id in self.facts or facts.report_id in self.retracted:
            return
        self.facts[facts.report_id] = facts
        self.hub.add(facts, self.links, None)
        self._grant(facts.agency, facts, None)
        for scope, retain_until in sorted(self.grants.get(facts.report_id, {}).items()):
            if retain_until is None or retain_until > now:
                self._grant(scope, facts, retain_until)

    def decided(
        self, recipient: str, report_id: str, allowed: bool, retain_until: datetime | None, now: datetime
    ) -> None:
        """A sharing decision: the report enters the recipient's scope, or leaves it."""
        facts = self.facts.get(report_id)
        if allowed and (retain_until is None or retain_until > now):
            self.grants[report_id][recipient] = retain_until
            if facts is not None:
                self._grant(recipient, facts, retain_until)
            return
        self.grants.get(report_id, {}).pop(recipient, None)
        if facts is not None and facts.agency != recipient:
            self._revoke(recipient, report_id)

    def add_links(self, links: Iterable[Link]) -> None:
        held = list(self.scopes.values())
        for link in links:
            if link.b in self.links[link.a]:
                continue
            self.links[link.a].add(link.b)
            self.links[link.b].add(link.a)
            for scope in held:
                scope.link(link)

    def forget(self, erased: set[str], retracted: set[str]) -> None:
        """Erasures and retractions: out of every scope."""
        erased, retracted = erased - self.erased, retracted - self.retracted
        if not erased and not retracted:
            return
        self.erased |= erased
        self.retracted |= retracted
        for report_id in retracted:
            self.grants.pop(report_id, None)
        for scope in self.scopes.values():
            scope.forget(erased, retracted)

    def expire(self, now: datetime) -> None:
        """Reports whose sharing decision's retention is over leave the recipient's scope (and its release
        scopes, whose ends are never later)."""
        for scope in list(self.scopes.values()):
            over = {r for r, until in scope.held.items() if until is not None and until <= now}
            scope.remove(over)

    # -- what to write ---------------------------------------------------------------------
    def flush(self) -> list[Emitted]:
        """The new signal versions of every scope since the last flush, each with its scope's next seq."""
        out = []
        for name in sorted(self.scopes):
            scope = self.scopes[name]
            for version, signal in scope.flush():
                scope.seq += 1
                out.append(Emitted(name, scope.seq, version, signal))
        return out

    def load_signal(self, scope_name: str, seq: int, version: int, signal: Signal) -> None:
        """A version already on tip.signals (restore): the books continue from what was written."""
        scope = self.scope(scope_name)
        scope.seq = max(scope.seq, seq)
        scope.book.load(version, signal, signal.requirement_id)

    def settle_loaded(self) -> None:
        """After a restore: map each open signal to its entity again, and close those the rebuilt state no
        longer produces (the plan changed, say). Every scope is re-evaluated whole at the next flush."""
        for scope in self.scopes.values():
            current = scope.correlator.evaluate()
            key_of = {s.signal_id: key for key, s in current.items()}
            for signal_id, (_, signal) in scope.book.versions.items():
                key = key_of.get(signal_id)
                if key is not None and signal.status == "open":
                    scope.book.by_entity[key] = signal_id
            scope.stale = [s for _, s in scope.book.latest() if s.status == "open" and s.signal_id not in key_of]
            scope.full = True
