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
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, MutableMapping, MutableSet
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from domain.correlate import Correlator, Requirement, Signal, SignalBook
from domain.facts import ReportFacts, without
from domain.state_codec import REPORT, checked, decode_json, dumps, flag, maybe, moment, text, when
from domain.working_set import (
    PRESENT,
    TEXT,
    TEXT_SET,
    Codec,
    StateError,
    WorkingSet,
    keys_below,
    prefetch,
    stored_set,
)
from schemas.normalise import CONTACT_KINDS, DOCUMENT_KINDS

if TYPE_CHECKING:
    from domain.linking import Link

HUB_SCOPE = "hub"
RELEASE = ">"  # release scopes are named AGENCY>PARTNER
Rules = Mapping[str, str]  # field path of a report -> the rule its decision applied (share, generalise, drop)


# What the stored state means: raised when the rules that built it change, so that a state built under the old
# ones is rebuilt from the topics, not read under the new (2: near-date links moved from level 1 to level 2).
SEMANTICS = 2


def fingerprint(plan: list[Requirement], pseudonym_key: bytes, partners: Iterable[str], contact_limit: int) -> str:
    """What a stored state was built under: the plan, the partners, the contact limit and (by a MAC, not the key
    itself) the pseudonym key. A change of any makes its entities and signals another state's."""
    plan_text = json.dumps([_plain(asdict(r)) for r in plan], sort_keys=True)
    key_id = hmac.new(pseudonym_key, b"tiphub/correlation-state/key", hashlib.sha256).hexdigest()[:16]
    config = json.dumps([plan_text, sorted(partners), contact_limit, key_id, SEMANTICS])
    return hashlib.sha256(config.encode()).hexdigest()[:32]


def _plain(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


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


def _read_held(raw: str) -> Held:
    until, rules = checked(decode_json(raw), list)
    if rules is not None and not all(type(v) is str for v in checked(rules, dict).values()):
        raise StateError("expected field rules")
    return Held(maybe(until, moment), rules)


HELD: Codec[Held] = Codec(lambda h: dumps([when(h.retain_until), h.rules]), _read_held)


def _read_grants(raw: str) -> dict[str, Held]:
    return {text(scope): _read_held(dumps(row)) for scope, row in checked(decode_json(raw), dict).items()}


GRANTS: Codec[dict[str, Held]] = Codec(
    lambda g: dumps({s: [when(h.retain_until), h.rules] for s, h in sorted(g.items())}), _read_grants
)


def _read_scope_row(raw: str) -> tuple[int, bool]:
    seq, full = checked(decode_json(raw), list)
    return int(checked(seq, int)), flag(full)


SCOPE_ROW: Codec[tuple[int, bool]] = Codec(lambda row: dumps(list(row)), _read_scope_row)


def _expiry_key(until: datetime, report_id: str) -> str:
    """Keys that sort as their moments do (UTC, fixed width), then by report."""
    moment = until.astimezone(UTC)
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S.%f}|{report_id}"


@dataclass
class _Scope:
    """One scope's correlator and signal book, and what the current batch changed in it. A scope that does
    not correlate (a partner's) only keeps what it holds, for the release scopes it pairs into."""

    name: str
    correlator: Correlator | None
    book: SignalBook = field(default_factory=SignalBook)
    seq: int = 0
    held: MutableMapping[str, Held] = field(default_factory=dict)
    expiring: MutableMapping[str, bool] = field(default_factory=dict)  # _expiry_key(until, report) of `held`
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

    def _hold(self, report_id: str, held: Held) -> Held | None:
        """Hold the report as `held`; returns how it was held before (None: it was not)."""
        before = self.held.get(report_id)
        if before is not None and before.retain_until is not None:
            self.expiring.pop(_expiry_key(before.retain_until, report_id), None)
        self.held[report_id] = held
        if held.retain_until is not None:
            self.expiring[_expiry_key(held.retain_until, report_id)] = True
        return before

    def _unhold(self, report_id: str) -> None:
        before = self.held.pop(report_id, None)
        if before is not None and before.retain_until is not None:
            self.expiring.pop(_expiry_key(before.retain_until, report_id), None)

    def expired(self, now: datetime) -> set[str]:
        """The reports held whose end is `now` or earlier (by the index, not a scan of what is held)."""
        return {key.split("|", 1)[1] for key in keys_below(self.expiring, _expiry_key(now, "\uffff"))}

    def add(
        self,
        facts: ReportFacts,
        held: Held,
        links: MutableMapping[str, set[str]] | None = None,
        near: MutableMapping[str, set[str]] | None = None,
    ) -> None:
        """Hold a report (again: the latest grant decides its end and rules, as a restore would read it)."""
        before = self._hold(facts.report_id, held)
        if self.correlator is None:
            return
        if before is not None:
            if before.rules != held.rules:
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
        if near is not None:  # near-date links: level 2, both ends
            for occ in usable.people:
                for other in near.get(occ.occ_id, set()):
                    self.correlator.near[occ.occ_id].add(other)
                    self.correlator.near[other].add(occ.occ_id)
        self.note(self.correlator.add(usable), usable.report_id)

    def link(self, link: Link) -> None:
        """A link between two people this scope holds (when one end arrives later, `add` brings it)."""
        if self.correlator is None:
            return
        if link.a in self.correlator.occurrences and link.b in self.correlator.occurrences:
            self.note(self.correlator.add_links([link]), None)

    def remove(self, report_ids: set[str], keep_held: bool = False) -> None:
        """Reports this scope may no longer see (retention over, decision withdrawn): as if never here."""
        gone = {r for r in report_ids if r in self.held}
        if not gone:
            return
        if not keep_held:
            for report_id in gone:
                self._unhold(report_id)
        if self.correlator is not None:
            self._removed(self.correlator.retract(gone))

    def forget(self, erased: set[str], retracted: set[str]) -> None:
        """People erased and reports retracted leave every entity they were in."""
        for report_id in retracted:
            self._unhold(report_id)
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
        """After a restore from stored state and a tail: map the book's versions the tail wrote (`loaded`) to
        their entity keys, evaluating the keys the restore changed and those the stored map names for signals
        the tail wrote (the tail may have changed an entity the replay, judging at `now`, leaves as it was
        stored: a share that ended while down, a person erased meanwhile). Keep for the next flush only the keys
        whose answer is not what was written. False (and the scope marked to be mapped whole) when a signal
        the tail wrote is of no key known here, or an open signal is left unmapped.

        Only the signals the tail wrote and the keys it touched are looked at: every other open signal was
        mapped when the state was stored (a flush maps every signal it writes)."""
        assert self.correlator is not None
        book, pending = self.book, dict[str, set[str]]()
        kind_of = {requirement.id: requirement.entity for requirement in self.correlator.plan}
        keys = {kind: set(entity_keys) for kind, entity_keys in self.keys.items()}
        known: set[str] = set()
        for signal_id in self.loaded:
            stored = book.by_entity.key_of(signal_id)
            if stored is not None:
                known.add(signal_id)
                keys.setdefault(kind_of[stored[0]], set()).add(stored[1])
        looked_at = set(self.loaded)  # signals whose mapping this may change
        for (requirement_id, key), signal in self.correlator.evaluate_keys(keys).items():
            known.add(self.correlator.names.signal_id(requirement_id, key))
            written = book.versions.get(signal.signal_id) if signal is not None else None
            mapped = book.by_entity.get((requirement_id, key))
            if mapped is not None:
                looked_at.add(mapped)
            if signal is not None and written is not None and written[1].status == "open":
                book.by_entity[(requirement_id, key)] = signal.signal_id  # as a full restore maps it
            else:
                book.by_entity.pop((requirement_id, key), None)
            if signal is not None and (written is None or written[1] != signal):
                pending.setdefault(kind_of[requirement_id], set()).add(key)
        unmapped = False
        for signal_id in sorted(looked_at):
            held = book.versions.get(signal_id)
            pair = book.by_entity.key_of(signal_id)
            if held is not None and held[1].status != "open" and pair is not None:
                del book.by_entity[pair]  # a signal the tail closed or merged is no entity's
            elif held is not None and held[1].status == "open" and pair is None:
                unmapped = True
        if unmapped or not self.loaded <= known:
            self.full, self.loaded = True, set()
            book.by_entity.clear()
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


def _report_of(occurrence: str) -> str:
    return occurrence.rsplit("#", 1)[0]


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
        tables: WorkingSet | None = None,
    ) -> None:
        self.plan = plan
        self.key = pseudonym_key
        self.partners = frozenset(partners)
        self.contact_limit = contact_limit
        # None: every map in this process's memory; else tables on disk behind a bounded cache
        # (domain/working_set.py): what the state holds is read as a batch touches it, not at start.
        self.tables = tables
        self.scopes: dict[str, _Scope] = {}
        self.facts: MutableMapping[str, ReportFacts]
        self.links: MutableMapping[str, set[str]]  # occurrence -> occurrences it is linked to (level 1)
        self.near: MutableMapping[str, set[str]]  # occurrence -> occurrences a near-date link joins (level 2)
        self.grants: MutableMapping[str, dict[str, Held]]  # report -> scope -> as decided
        self.erased: MutableSet[str]
        self.retracted: MutableSet[str]
        # Occurrences of erased people and withdrawn reports: no link to them is kept, or taken in again.
        self.gone: MutableSet[str]
        if tables is None:
            self.facts, self.links, self.grants = {}, defaultdict(set), defaultdict(dict)
            self.near = defaultdict(set)
            self.erased, self.retracted, self.gone = set(), set(), set()
        else:
            self.facts = tables.map("facts", REPORT)
            self.links = tables.map("links", TEXT_SET, set, mutable=True)
            self.near = tables.map("near_links", TEXT_SET, set, mutable=True)
            self.grants = tables.map("grants", GRANTS, dict, mutable=True)
            self.erased, self.retracted = stored_set(tables, "erased"), stored_set(tables, "retracted")
            self.gone = stored_set(tables, "gone_occurrences")
            meta = tables.map("meta", TEXT)
            taken = fingerprint(plan, pseudonym_key, self.partners, contact_limit)
            if meta.get("fingerprint", taken) != taken:
                raise StateError(
                    "the tables were written under another Collection Plan, partners, contact limit or pseudonym key, "
                    "or under the correlation rules of an earlier release"
                )
            meta["fingerprint"] = taken
            self._rows = tables.map("scopes", SCOPE_ROW)  # scope -> (seq, full), as `stage` last wrote them
            for name in sorted(self._rows):
                self.scope(name)
        # Every decision under one agreement gives a report of one shape the same rules: each distinct set is
        # held once and shared by the grants (never changed in place), not once per decision.
        self._rules: dict[tuple[tuple[str, str], ...], Rules] = {}

    def shared_rules(self, rules: Rules) -> Rules:
        """The one held copy of these rules."""
        return self._rules.setdefault(tuple(sorted(rules.items())), rules)

    def scope(self, name: str) -> _Scope:
        found = self.scopes.get(name)
        if found is not None:
            return found
        stored = None if self.tables is None else self._rows.get(name)
        # A scope the committed rows do not name has nothing in the tables: its first batch reads nothing.
        within = None if self.tables is None else self.tables.within(name + "/", fresh=stored is None)
        correlator = None
        if name not in self.partners:
            correlator = Correlator(
                self.plan,
                contact_limit=self.contact_limit,
                external_links=name == HUB_SCOPE,  # other scopes link on what they may see, themselves
                names=ScopeNames(self.key, name),
                tables=within,
            )
            if stored is None:  # a new scope: nobody erased or retracted comes into it
                correlator.erased |= self.erased
                correlator.retracted |= self.retracted
        if within is None:
            found = _Scope(name, correlator)
        else:
            found = _Scope(
                name,
                correlator,
                book=SignalBook(tables=within.tables.within(name + "/book/", fresh=stored is None)),
                held=within.map("held", HELD),
                expiring=within.map("expiring", PRESENT),
            )
            found.seq, found.full = stored if stored is not None else (0, True)
        self.scopes[name] = found
        return found

    def prefetch(
        self, reports: Iterable[ReportFacts], decided: Iterable[tuple[str, str]] = (), linked: Iterable[str] = ()
    ) -> None:
        """Read from the tables, a query per table, the keys a batch of these reports, of decisions (recipient,
        report id) and of links between these occurrences (`linked`) will touch first, in the scopes they go to:
        the hub's and the agency's for a report, the recipient's for a decision (in memory: nothing to do). What
        it misses is read key by key, as before."""
        if self.tables is None:
            return
        known = {r.report_id: r for r in reports}
        decided = list(decided)
        ids = set(known) | {report_id for _, report_id in decided}
        for table in (self.facts, self.grants, self.retracted):
            prefetch(table, ids)
        for report_id in sorted(ids - known.keys()):
            facts = self.facts.get(report_id)
            if facts is not None:
                known[report_id] = facts
        prefetch(self.erased, {o.subject_key_id for r in known.values() for o in r.people})
        linked = set(linked)
        prefetch(self.links, {o.occ_id for r in known.values() for o in r.people} | linked)
        prefetch(self.near, {o.occ_id for r in known.values() for o in r.people} | linked)
        prefetch(self.gone, linked)
        prefetch(self.retracted, {_report_of(o) for o in linked})
        for scope in self.scopes.values():  # a grant asks every scope whether it holds the report
            prefetch(scope.held, ids)

        def sides(name: str) -> list[str]:
            """The scope and the release scopes it is a side of."""
            return [s for s in self.scopes if s == name or (RELEASE in s and name in s.split(RELEASE))]

        going: dict[str, list[ReportFacts]] = {}
        for facts in known.values():
            for name in [HUB_SCOPE, *sides(facts.agency)]:
                going.setdefault(name, []).append(facts)
        for recipient, report_id in decided:
            if report_id in known:
                for name in sides(recipient):
                    going.setdefault(name, []).append(known[report_id])
        for name, batch in sorted(going.items()):
            going_to = self.scopes.get(name)  # a scope this batch makes has nothing to read
            if going_to is not None and going_to.correlator is not None:
                going_to.correlator.prefetch(batch)

    def stage(self) -> None:
        """Before the tables are written: each scope's feed position, and whether its book is mapped to its
        entities with nothing waiting for a flush, go with them."""
        if self.tables is None:
            return
        for name, scope in self.scopes.items():
            # A book with keys still to evaluate is stored as not mapped: a restore from it maps it whole.
            waiting = bool(scope.loaded or scope.stale or scope.absorbed or any(scope.keys.values()))
            row = (scope.seq, scope.full or waiting)
            if self._rows.get(name) != row:
                self._rows[name] = row

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
        erased = {p.occ_id for p in facts.people if p.subject_key_id in self.erased}
        if erased:  # a person erased before the report was read (a replay): never held, not even in the facts
            facts = without(facts, erased)
            self._unlink(erased)
        self.facts[facts.report_id] = facts
        self.hub.add(facts, Held(None, None), self.links, self.near)
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
            ends = (link.a, link.b)
            held = self.near if link.basis == "dob_near" else self.links  # near dates join at level 2 only
            if any(o in self.gone or _report_of(o) in self.retracted for o in ends) or link.b in held.get(link.a, ()):
                continue
            held[link.a].add(link.b)
            held[link.b].add(link.a)
            hub.link(link)

    def forget(self, erased: set[str], retracted: set[str]) -> None:
        """Erasures and retractions: out of every scope."""
        erased, retracted = erased - self.erased, retracted - self.retracted
        if not erased and not retracted:
            return
        hub = self.scopes.get(HUB_SCOPE)
        holding: set[str] = set()  # the reports an erased person is in (every report held is in the hub's scope)
        gone: set[str] = set()  # their occurrences, and those of the reports withdrawn
        if erased and hub is not None and hub.correlator is not None:
            gone = {o for subject in erased for o in hub.correlator.by_subject.get(subject, ())}
            holding = {_report_of(o) for o in gone}
        for report_id in retracted:
            withdrawn = self.facts.get(report_id)
            gone |= {p.occ_id for p in withdrawn.people} if withdrawn is not None else set()
        self.erased |= erased
        self.retracted |= retracted
        for report_id in retracted:
            self.grants.pop(report_id, None)
        for scope in self.scopes.values():
            scope.forget(erased, retracted)
        # Nothing of an erased person, nor of a withdrawn report, stays in the facts a later share would use (nor
        # in a state file: its rows are overwritten).
        for report_id in retracted:
            self.facts.pop(report_id, None)
        for report_id in sorted(holding - retracted):
            facts = self.facts.get(report_id)
            if facts is not None:
                self.facts[report_id] = without(facts, {p.occ_id for p in facts.people if p.subject_key_id in erased})
        self._unlink(gone)

    def _unlink(self, occurrences: set[str]) -> None:
        """No link to these occurrences any more, here or in the hub's correlator, and none taken in later."""
        hub = self.scopes.get(HUB_SCOPE)
        tables = [self.links, self.near]
        if hub is not None and hub.correlator is not None:
            tables += [hub.correlator.links, hub.correlator.near]
        for occ in sorted(occurrences):
            self.gone.add(occ)
            for links in tables:
                for other in links.pop(occ, None) or ():
                    held = links.get(other)
                    if held is not None:
                        held.discard(occ)
                        if not held:
                            del links[other]

    def resume(self, now: datetime) -> None:
        """After a restore from stored state and its tail: what a restore replaying everything at `now` builds.

        Such a restore judges every sharing decision at `now`: a report whose share ended while the stage was
        down was never in the recipient's scope. Here it leaves the scope, and its correlator does not keep it
        as withdrawn (a later share brings it back, as it would after a full restore)."""
        for scope in list(self.scopes.values()):
            over = scope.expired(now)
            scope.remove(over)
            if scope.correlator is not None:
                for report_id in over:
                    if report_id not in self.retracted:
                        scope.correlator.retracted.discard(report_id)

    def expire(self, now: datetime) -> None:
        """Reports whose sharing decision's retention is over leave the recipient's scope (and its release
        scopes, whose ends are never later)."""
        for scope in list(self.scopes.values()):
            scope.remove(scope.expired(now))

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

        A scope restored from its tables, its book mapped, is mapped by `_Scope.settle_tail` (only what the
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
