"""Correlation per scope: what a caller is shown is correlated from what the caller may see.

A scope is an agency or a partner (a caller's `acts_for`). Its reports are the agency's own and
those the policy engine decided to share with it (allowed decisions on tip.decisions, until their
`retain_until`). Each scope has its own entity resolution, signals, versions and coverage, so a
report a caller may not see changes nothing that caller can observe: not whether two people are
one, not whether a signal exists, not a version number, a score, a count or a date. Correlating
once over every report and filtering afterwards cannot promise that: a hidden report can join two
visible people, make a requirement answered, or take the smallest member of an entity (and with it
the signal's id).

Nor may a field the caller is not shown: a scope links people only on material derived from fields
its caller's decision shares exactly (`restrict`). An agency whose view of a report drops a
victim's passport cannot learn that passport by submitting reports of its own with guessed numbers
and watching which one joins: in its scope, that report carries no passport token at all. Its own
reports it sees whole.

The `hub` scope holds every accepted report with all its material: the hub's own evaluation
(`tiphub eval`, the bench). No caller is ever served it.

A release scope `A>P` holds the reports that both an agency (or domestic recipient) A and a partner
P may see, linked on what A may see of them. A summary for P drafted by A's analysts is one of its
signals (gateway/release.py): made only of reports both sides may see, grouped only by evidence the
drafting agency may see (a partner publishes nothing, so it cannot probe; what it receives is the
release a releasing officer approved, under its own field rules). Partners have no scope of their
own to correlate: no partner caller is served signals.

Signal ids and entity pseudonyms are keyed per scope (`ScopeNames`): two scopes' ids for one
person cannot be matched, and nobody without the hub's pseudonym key can recompute an id from a
report id. Pure logic: the union stage (streams/agents/correlate_signals.py) feeds it and writes
what it returns.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from domain.correlate import Correlator, Requirement, Signal, SignalBook
from domain.facts import ReportFacts
from schemas.normalise import CONTACT_KINDS, DOCUMENT_KINDS

if TYPE_CHECKING:
    from domain.linking import Link

HUB_SCOPE = "hub"
RELEASE = ">"  # release scopes are named AGENCY>PARTNER
Rules = Mapping[str, str]  # field path of a report -> the rule its decision applied (share, generalise, drop)


def release_scope(agency: str, partner: str) -> str:
    return f"{agency}{RELEASE}{partner}"


def restrict(report: ReportFacts, rules: Rules | None) -> ReportFacts | None:
    """The report as a scope may use it: only material from fields its decision shares exactly. None: the
    scope may not even place it in time (its dates are dropped), so it takes no part. `rules` None: the
    agency's own report, whole."""
    if rules is None:
        return report

    def shared(path: str) -> bool:
        return rules.get(path) == "share"

    def whole(*paths: str) -> bool:
        """Every field a token is derived from is shared exactly (a field the report lacks has no rule)."""
        return all(rules.get(p) in (None, "share") for p in paths)

    when = rules.get("observed_at")
    if when not in ("share", "generalise"):
        return None
    observed = report.observed_at
    if when == "generalise":
        observed = observed.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    source = rules.get("source_agency")
    agency = report.agency if source == "share" else report.agency.split("-", 1)[0] if source == "generalise" else ""
    people = []
    kept: set[str] = set()
    for occ in report.people:
        base = "subjects[" + occ.occ_id.rsplit("#", 1)[1] + "]"
        documents: list[str] = []
        contacts: list[str] = []
        for j, (kind, tokens) in enumerate(occ.identifiers):
            # A token is keyed over the kind, the issuer and the value (a phone written nationally is read
            # with the nationality): linking on it is seeing all of them.
            ident = f"{base}.identifiers[{j}]"
            national = (f"{base}.nationality",) if kind == "PHONE" else ()
            if shared(f"{ident}.value") and whole(f"{ident}.kind", f"{ident}.issuer", *national):
                (documents if kind in DOCUMENT_KINDS else contacts if kind in CONTACT_KINDS else []).extend(tokens)
        kept |= {*documents, *contacts}
        fuzzy = (not occ.named or shared(f"{base}.name")) and (not occ.dated or shared(f"{base}.date_of_birth"))
        people.append(
            replace(
                occ,
                role=occ.role if shared(f"{base}.role") else "",
                minor=occ.minor if shared(f"{base}.minor") else None,
                documents=tuple(sorted(documents)),
                contacts=tuple(sorted(contacts)),
                clk=occ.clk if fuzzy else None,
                dob_key=occ.dob_key if fuzzy else None,
                ny_keys=occ.ny_keys if fuzzy else (),
                bridges=occ.bridges if fuzzy else (),
            )
        )
    registrations = [
        group
        for j, group in enumerate(report.registrations)
        if shared(f"organisations[{j}].registration") and whole(f"organisations[{j}].country")
    ]
    organisations = sorted({t for group in registrations for t in group})
    kept |= set(organisations)
    return replace(
        report,
        agency=agency,
        observed_at=observed,
        elements=report.elements if shared("elements") else frozenset(),
        indicator_type=report.indicator_type if shared("indicator_type") else "",
        reliability=report.reliability if shared("source_reliability") else None,
        credibility=report.credibility if shared("info_credibility") else None,
        people=tuple(people),
        organisations=tuple(organisations),
        aliases=tuple(g for g in report.aliases if set(g) <= kept),
        registrations=tuple(registrations),
    )


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


@dataclass(frozen=True)
class Held:
    """A report a scope may see: until when (None: no end), and by which field rules (None: whole)."""

    retain_until: datetime | None
    rules: Rules | None


@dataclass
class _Scope:
    """One scope's correlator and signal book, and what the current batch changed in it. A scope that does
    not correlate (a partner's) only keeps what it holds, for the release scopes it pairs into."""

    name: str
    correlator: Correlator | None
    book: SignalBook = field(default_factory=SignalBook)
    seq: int = 0
    held: dict[str, Held] = field(default_factory=dict)
    full: bool = True  # its book is not mapped to its entities: map it and evaluate everything at the next flush
    keys: dict[str, set[str]] = field(default_factory=dict)
    absorbed: dict[str, str] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    loaded: set[str] = field(default_factory=set)  # restoring: signals with versions loaded from the log
    stale: list[Signal] = field(default_factory=list)
    coverage: dict[str, dict[str, Any]] = field(default_factory=dict)  # as last written

    def note(self, touched: set[str], report_id: str | None) -> None:
        assert self.correlator is not None
        self.absorbed.update(self.correlator.absorbed)
        self.touched |= touched
        if report_id is not None and report_id not in self.correlator.reports:
            return
        for kind, entity_keys in self.correlator.affected(report_id, touched).items():
            self.keys.setdefault(kind, set()).update(entity_keys)

    def add(self, facts: ReportFacts, held: Held, links: dict[str, set[str]] | None = None) -> None:
        """Hold a report (again: the latest grant decides its end and rules, as a restore would read it)."""
        again = facts.report_id in self.held
        before = self.held.get(facts.report_id)
        self.held[facts.report_id] = held
        if self.correlator is None:
            return
        if again:
            if before is not None and before.rules != held.rules:
                self.remove({facts.report_id}, keep_held=True)  # its material changed: correlate it anew
                self.correlator.retracted.discard(facts.report_id)
            else:
                return
        usable = restrict(facts, held.rules)
        if usable is None:
            return
        if links is not None:  # the hub takes its links from the link stage
            for occ in usable.people:
                self.correlator.links[occ.occ_id] |= links.get(occ.occ_id, set())
        self.note(self.correlator.add(usable), usable.report_id)

    def link(self, link: Link) -> None:
        """A link between two people this scope holds (when one end arrives later, `add` brings it)."""
        if self.correlator is None:
            return
        if link.a in self.correlator.occurrences and link.b in self.correlator.occurrences:
            self.note(self.correlator.add_links([link]), None)

    def remove(self, report_ids: set[str], keep_held: bool = False) -> None:
        """Reports this scope may no longer see (retention over, decision withdrawn): as if never here."""
        gone = report_ids & self.held.keys()
        if not gone:
            return
        if not keep_held:
            for report_id in gone:
                del self.held[report_id]
        if self.correlator is not None:
            self._removed(self.correlator.retract(gone))

    def forget(self, erased: set[str], retracted: set[str]) -> None:
        """People erased and reports retracted leave every entity they were in."""
        for report_id in retracted:
            self.held.pop(report_id, None)
        if self.correlator is None:
            return
        self._removed(self.correlator.erase(erased))
        self._removed(self.correlator.retract(retracted))

    def _removed(self, keys: dict[str, set[str]]) -> None:
        """After a removal from the correlator: the entity keys it changed are evaluated at the next flush."""
        assert self.correlator is not None
        self.absorbed.update(self.correlator.absorbed)
        for kind, entity_keys in keys.items():
            self.keys.setdefault(kind, set()).update(entity_keys)

    def settle_tail(self) -> bool:
        """After `resume`: map the book's versions the tail wrote (`loaded`) to their entity keys, evaluating
        the keys the restore changed and those the snapshot's map names for signals the tail wrote (the tail
        may have changed an entity the replay, judging at `now`, leaves as the snapshot had it: a share that
        ended while down, a person erased meanwhile). Keep for the next flush only the keys whose answer is not
        what was written. False (and the scope marked to be mapped whole) when a signal the tail wrote is of
        no key known here, or an open signal is left unmapped."""
        assert self.correlator is not None
        book, pending = self.book, dict[str, set[str]]()
        kind_of = {requirement.id: requirement.entity for requirement in self.correlator.plan}
        key_of = {sid: entity for entity, sid in book.by_entity.items()}  # the snapshot's map, inverted
        keys = {kind: set(entity_keys) for kind, entity_keys in self.keys.items()}
        for signal_id in self.loaded & key_of.keys():
            requirement_id, key = key_of[signal_id]
            keys.setdefault(kind_of[requirement_id], set()).add(key)
        known = set(key_of)
        for (requirement_id, key), signal in self.correlator.evaluate_keys(keys).items():
            known.add(self.correlator.names.signal_id(requirement_id, key))
            written = book.versions.get(signal.signal_id) if signal is not None else None
            if signal is not None and written is not None and written[1].status == "open":
                book.by_entity[(requirement_id, key)] = signal.signal_id  # as a full restore maps it
            else:
                book.by_entity.pop((requirement_id, key), None)
            if signal is not None and (written is None or written[1] != signal):
                pending.setdefault(kind_of[requirement_id], set()).add(key)
        book.by_entity = {k: sid for k, sid in book.by_entity.items() if book.versions[sid][1].status == "open"}
        mapped = set(book.by_entity.values())
        unmapped = any(s.status == "open" and s.signal_id not in mapped for _, s in book.versions.values())
        if unmapped or not self.loaded <= known:
            self.full, book.by_entity, self.loaded = True, {}, set()
            return False
        self.keys, self.absorbed, self.loaded = pending, {}, set()
        return True

    def flush(self) -> list[tuple[int, Signal]]:
        if self.correlator is None:
            return []
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
        self.grants: dict[str, dict[str, Held]] = defaultdict(dict)  # report -> scope -> as decided
        self.erased: set[str] = set()
        self.retracted: set[str] = set()
        # Every decision under one agreement gives a report of one shape the same rules: each distinct set is
        # held once and shared by the grants (never changed in place), not once per decision.
        self._rules: dict[tuple[tuple[str, str], ...], Rules] = {}

    def shared_rules(self, rules: Rules) -> Rules:
        """The one held copy of these rules."""
        return self._rules.setdefault(tuple(sorted(rules.items())), rules)

    def scope(self, name: str) -> _Scope:
        found = self.scopes.get(name)
        if found is None:
            correlator = None
            if name not in self.partners:
                correlator = Correlator(
                    self.plan,
                    contact_limit=self.contact_limit,
                    external_links=name == HUB_SCOPE,  # other scopes link on what they may see, themselves
                    names=ScopeNames(self.key, name),
                )
                correlator.erased |= self.erased
                correlator.retracted |= self.retracted
            found = self.scopes[name] = _Scope(name, correlator)
        return found

    @property
    def hub(self) -> _Scope:
        return self.scope(HUB_SCOPE)

    def _grant(self, name: str, facts: ReportFacts, held: Held) -> None:
        """The report is visible to `name`: into its scope, and into every release scope whose other side
        sees it too (until the earlier of the two ends, by the agency's rules)."""
        self.scope(name).add(facts, held)
        report_id = facts.report_id
        if name in self.partners:
            others = [s for s in self.scopes.values() if s.name not in self.partners and s.name != HUB_SCOPE]
            pairs = [(s.name, name, s.held.get(report_id)) for s in others if RELEASE not in s.name]
        else:
            pairs = [(name, p, self.scopes[p].held.get(report_id)) for p in sorted(self.partners) if p in self.scopes]
        for agency, partner, other in pairs:
            if other is None:
                continue
            mine = self.scopes[agency].held[report_id]
            until = _earlier(mine.retain_until, self.scopes[partner].held[report_id].retain_until)
            self.scope(release_scope(agency, partner)).add(facts, Held(until, mine.rules))

    def _revoke(self, name: str, report_id: str) -> None:
        """The report is no longer visible to `name`: out of its scope and of the release scopes it is in."""
        for scope in list(self.scopes.values()):
            if scope.name == name or (RELEASE in scope.name and name in scope.name.split(RELEASE)):
                scope.remove({report_id})

    # -- facts arriving --------------------------------------------------------------------
    def accept(self, facts: ReportFacts, now: datetime) -> None:
        """An accepted report: it is in the hub's scope and its agency's (whole), and in every scope a
        decision already shared it with."""
        if facts.report_id in self.facts or facts.report_id in self.retracted:
            return
        self.facts[facts.report_id] = facts
        self.hub.add(facts, Held(None, None), self.links)
        self._grant(facts.agency, facts, Held(None, None))
        for scope, held in sorted(self.grants.get(facts.report_id, {}).items()):
            if scope != facts.agency and (held.retain_until is None or held.retain_until > now):
                self._grant(scope, facts, held)

    def decided(
        self,
        recipient: str,
        report_id: str,
        allowed: bool,
        retain_until: datetime | None,
        now: datetime,
        rules: Rules | None = None,
    ) -> None:
        """A sharing decision: the report enters the recipient's scope, under the rules the decision gave
        each field (`rules`: path -> share, generalise or drop), or leaves it."""
        facts = self.facts.get(report_id)
        if report_id in self.retracted or (facts is not None and facts.agency == recipient):
            return  # retracted for good; an agency sees its own report whole, whatever a decision for it says
        if allowed and (retain_until is None or retain_until > now):
            held = Held(retain_until, self.shared_rules(rules if rules is not None else {}))
            self.grants[report_id][recipient] = held
            if facts is not None:
                self._grant(recipient, facts, held)
            return
        self.grants.get(report_id, {}).pop(recipient, None)
        if facts is not None:
            self._revoke(recipient, report_id)

    def add_links(self, links: Iterable[Link]) -> None:
        """Level-1 links from the link stage, for the hub's scope (the others link on what they may see)."""
        hub = self.hub
        for link in links:
            if link.b in self.links[link.a]:
                continue
            self.links[link.a].add(link.b)
            self.links[link.b].add(link.a)
            hub.link(link)

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
            over = {r for r, held in scope.held.items() if held.retain_until is not None and held.retain_until <= now}
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
        scope.loaded.add(signal.signal_id)

    def settle_loaded(self) -> None:
        """After a restore: map each open signal to its entity again, and close those the rebuilt state no
        longer produces (the plan changed, say). Such a scope is re-evaluated whole at the next flush.

        A scope a snapshot brought back with its book's map is mapped by `_Scope.settle_tail` (only what the
        tail touched), unless that finds what it cannot map: then it is mapped whole, as here."""
        for scope in self.scopes.values():
            if scope.correlator is None:
                continue
            if not scope.full and scope.settle_tail():
                continue
            current = scope.correlator.evaluate()
            key_of = {s.signal_id: key for key, s in current.items()}
            for signal_id, (_, signal) in scope.book.versions.items():
                key = key_of.get(signal_id)
                if key is not None and signal.status == "open":
                    scope.book.by_entity[key] = signal_id
            scope.stale = [s for _, s in scope.book.latest() if s.status == "open" and s.signal_id not in key_of]
            scope.full, scope.loaded = True, set()
