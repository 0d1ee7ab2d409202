"""Entity resolution on pseudonymous data and the Collection Plan's requirements, as pure logic.

People link in two levels (docs/correlation.md):
1. strong links: a shared document token (passport, national id, visa); or a fuzzy name+DOB match,
   meaning equal keyed full-DOB tokens and Dice >= 0.70 on the keyed Bloom encodings, or, without
   two full DOBs, a shared name-skeleton+year key and Dice >= 0.80. Union-find over these.
2. contact links between level-1 clusters (phone, email, bank account, handle): only when the two
   clusters do not conflict (known DOBs disjoint, or names clearly different), and only while the
   contact touches at most `contact_limit` clusters; past that it is a controller's contact: it
   stops linking and raises IR-4 instead.
Entities are the components of level 2; an entity's id is its smallest member, so the final state
does not depend on the order reports arrive in.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from domain.facts import (
    CONFLICT_DICE,
    PersonOccurrence,
    ReportFacts,
    dice,
    near_match_any,
    strong_match_any,
    without,
)
from domain.linking import Link
from domain.state_codec import OCCURRENCE, REPORT, checked, decode_json, dumps, flag, maybe, moment, text, texts, when
from domain.working_set import COUNTS, INTEGER, TEXT, TEXT_SET, Codec, Tables, prefetch, stored_set
from schemas.elements import covers_requirement, groups_covered

V = TypeVar("V")


@dataclass(frozen=True)
class Requirement:
    id: str
    question: str
    priority: int
    entity: str
    window_days: int
    min_agencies: int = 1
    min_victims: int = 0
    min_people: int = 0
    legal_definition: bool = False
    required_elements: frozenset[str] = frozenset()
    first: frozenset[str] = frozenset()
    then: frozenset[str] = frozenset()
    all_of: tuple[tuple[str, str | None], ...] = ()
    roles: frozenset[str] = frozenset()  # person entities: at least one occurrence in one of these roles


def load_plan(data: dict[str, Any]) -> list[Requirement]:
    plan = []
    for row in data["requirements"]:
        plan.append(
            Requirement(
                id=row["id"],
                question=row["question"],
                priority=int(row["priority"]),
                entity=row["entity"],
                window_days=int(row["window_days"]),
                min_agencies=int(row.get("min_agencies", 1)),
                min_victims=int(row.get("min_victims", 0)),
                min_people=int(row.get("min_people", 0)),
                legal_definition=row.get("elements") == "legal_definition",
                required_elements=frozenset(row.get("required_elements", [])),
                first=frozenset(row.get("first", [])),
                then=frozenset(row.get("then", [])),
                all_of=tuple((x["indicator_type"], x.get("element")) for x in row.get("all_of", [])),
                roles=frozenset(row.get("roles", [])),
            )
        )
    return plan


@dataclass(frozen=True)
class Signal:
    """One signal's content; the version is assigned by whoever emits it."""

    signal_id: str
    requirement_id: str
    entity: str  # a pseudonym: a hash, never a linkage token
    status: str
    merged_into: str | None
    report_ids: tuple[str, ...]
    agencies: tuple[str, ...]
    elements: tuple[str, ...]
    act_means_purpose: tuple[str, ...]
    minor_involved: bool
    score: float
    first_seen: datetime
    last_seen: datetime
    updated_at: datetime


def signal_id(requirement_id: str, entity_key: str) -> str:
    return "sig-" + hashlib.sha256(f"{requirement_id}|{entity_key}".encode()).hexdigest()[:20]


def pseudonym(entity_key: str) -> str:
    return "ent-" + hashlib.sha256(f"entity|{entity_key}".encode()).hexdigest()[:16]


class Names(Protocol):
    """How a correlator names its signals and entities (domain/scoped.py keys them per scope)."""

    def signal_id(self, requirement_id: str, entity_key: str) -> str: ...

    def entity(self, entity_key: str) -> str: ...


class PlainNames:
    """Unkeyed names, for pure tests and measurements of the correlation alone."""

    def signal_id(self, requirement_id: str, entity_key: str) -> str:
        return signal_id(requirement_id, entity_key)

    def entity(self, entity_key: str) -> str:
        return pseudonym(entity_key)


GRADE = {"A": 1.0, "B": 0.8, "C": 0.6, "D": 0.4, "E": 0.2, "F": 0.0}
CRED = {"1": 1.0, "2": 0.8, "3": 0.6, "4": 0.4, "5": 0.2, "6": 0.0}


def score(reports: list[ReportFacts], coverage: float) -> float:
    """0..1 from the admiralty grading, independent agencies, element coverage and how closely in time
    different agencies corroborate each other (content-only: replays give the same score)."""
    grading = sum(GRADE.get(r.reliability or "", 0.5) * CRED.get(r.credibility or "", 0.5) for r in reports) / len(
        reports
    )
    agencies = min(len({r.agency for r in reports}), 4) / 4
    ordered = sorted(reports, key=lambda r: r.observed_at)
    gaps = [(b.observed_at - a.observed_at).days for a, b in itertools.pairwise(ordered) if a.agency != b.agency]
    closeness = 1 / (1 + min(gaps) / 90) if gaps else 0.0
    return round(0.3 * grading + 0.3 * agencies + 0.25 * coverage + 0.15 * closeness, 3)


class _UnionFind:
    def __init__(self, parent: MutableMapping[str, str] | None = None) -> None:
        self.parent: MutableMapping[str, str] = {} if parent is None else parent

    def add(self, x: str) -> None:
        self.parent.setdefault(x, x)

    def find(self, x: str) -> str:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> str:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        keep, drop = (ra, rb) if ra < rb else (rb, ra)
        self.parent[drop] = keep
        return keep


@dataclass
class Correlator:
    plan: list[Requirement]
    contact_limit: int = 3
    reports: MutableMapping[str, ReportFacts] = field(default_factory=dict)
    occurrences: MutableMapping[str, PersonOccurrence] = field(default_factory=dict)
    erased: set[str] = field(default_factory=set)
    retracted: set[str] = field(default_factory=set)
    # The union stage: level-1 links arrive from the partitioned link stage instead of being found here.
    external_links: bool = False
    links: MutableMapping[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # Near-date links (full DOBs a slip apart under one name): occurrence -> the occurrences it is near. Not
    # level 1: they join two clusters at level 2, and only where the reading is unambiguous (`_near_usable`).
    near: MutableMapping[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # Linkage key rotation: each token of a bridged identifier -> the one token the identifier is
    # named by here (the oldest version it was seen under), so documents, contacts and
    # organisations stay one entity across a rotation and after the earlier key is retired.
    token_names: MutableMapping[str, str] = field(default_factory=dict)
    names: Names = field(default_factory=PlainNames)
    # Where the maps below are kept: None, in this process's memory; else tables on disk, worked on through a
    # bounded cache (domain/working_set.py), so that memory does not follow the history.
    tables: Tables | None = None

    def __post_init__(self) -> None:
        if self.tables is not None:
            self.reports = self._map("reports", REPORT)
            self.occurrences = self._map("occurrences", OCCURRENCE)
            self.erased = stored_set(self.tables, "erased")  # type: ignore[assignment]
            self.retracted = stored_set(self.tables, "retracted")  # type: ignore[assignment]
            self.links = self._map("links", TEXT_SET, set, mutable=True)
            self.near = self._map("near", TEXT_SET, set, mutable=True)
            self.token_names = self._map("token_names", TEXT)
        self.uf = _UnionFind(self._map("parent", TEXT))
        self.level1_members: MutableMapping[str, set[str]] = self._map("level1", TEXT_SET, mutable=True)
        self.by_document = self._map("by_document", TEXT_SET, set, mutable=True)
        self.by_dob = self._map("by_dob", TEXT_SET, set, mutable=True)
        self.by_ny = self._map("by_ny", TEXT_SET, set, mutable=True)
        self.by_ny_without_dob = self._map("by_ny_without_dob", TEXT_SET, set, mutable=True)
        # Under each `nd:` key, a few occurrences per date (`NEAR_REPS`): all of one name and date are one cluster
        # (identical encodings), so a near link to one of them reaches it, and a crowd of namesakes costs a report
        # no more than its few dates (not every namesake filed).
        self.near_reps = self._map("near_reps", TEXT_SET, set, mutable=True)
        self.by_contact = self._map("by_contact", TEXT_SET, set, mutable=True)
        self.by_org = self._map("by_org", TEXT_SET, set, mutable=True)
        self.by_subject = self._map("by_subject", TEXT_SET, set, mutable=True)  # erasure finds its people here
        self.entity_of: MutableMapping[str, str] = self._map("entity_of", TEXT)
        self.entity_members: MutableMapping[str, set[str]] = self._map("entities", TEXT_SET, mutable=True)
        self.absorbed: dict[str, str] = {}  # after add(): vanished entity id -> the entity that took it in
        # Coverage kept as reports arrive: a batch must not rescan every report the hub has seen.
        self.considered: MutableMapping[str, int] = (  # requirement -> reports
            Counter() if self.tables is None else self._map("considered", INTEGER, int)
        )
        self.reporting: MutableMapping[str, Counter[str]] = self._map(  # requirement -> agency -> reports
            "reporting", COUNTS, Counter, mutable=True
        )

    def prefetch(self, reports: Iterable[ReportFacts]) -> None:
        """Read from the tables, a query per table, the keys adding these reports will touch first (in memory:
        nothing to do). Keys reached through them (a cluster's other members, say) are read key by key."""
        if self.tables is None:
            return
        reports = list(reports)
        people = [p for r in reports for p in r.people]
        occ_ids = {p.occ_id for p in people}
        subjects = {p.subject_key_id for p in people}
        documents = {t for p in people for t in p.documents} | {t for r in reports for g in r.aliases for t in g}
        contacts = {t for p in people for t in p.contacts}
        organisations = {t for r in reports for t in r.organisations}
        fetch: list[tuple[object, set[str]]] = [
            (self.reports, {r.report_id for r in reports}),
            (self.retracted, {r.report_id for r in reports}),
            (self.erased, subjects),
            (self.by_subject, subjects),
            (self.token_names, documents | contacts | organisations),
            (self.by_document, documents),
            (self.by_contact, contacts),
            (self.by_org, organisations),
        ]
        fetch += [
            (table, occ_ids) for table in (self.occurrences, self.uf.parent, self.level1_members, self.links, self.near)
        ]
        fetch.append((self.entity_of, occ_ids))
        if not self.external_links:
            variants = [v for p in people for v in p.variants()]
            fetch.append((self.by_dob, {v.dob_key for v in variants if v.dob_key}))
            ny = {k for v in variants for k in v.ny_keys}
            fetch += [(self.by_ny, ny), (self.by_ny_without_dob, ny), (self.near_reps, ny)]
        for table, keys in fetch:
            prefetch(table, keys)

    def _map(
        self, name: str, codec: Codec[V], default: Callable[[], V] | None = None, *, mutable: bool = False
    ) -> MutableMapping[str, V]:
        """A map of this correlator's state: a dict (a defaultdict with `default`), or a table of `tables`."""
        if self.tables is not None:
            return self.tables.map(name, codec, default, mutable=mutable)
        return {} if default is None else defaultdict(default)

    # -- level 1 ---------------------------------------------------------------------------
    def _union1(self, a: str, b: str) -> None:
        ra, rb = self.uf.find(a), self.uf.find(b)
        if ra != rb:
            keep = self.uf.union(a, b)
            drop = rb if keep == ra else ra
            self.level1_members[keep] |= self.level1_members.pop(drop)

    def _add_person(self, occ: PersonOccurrence) -> None:
        self.occurrences[occ.occ_id] = occ
        self.uf.add(occ.occ_id)
        self.level1_members[occ.occ_id] = {occ.occ_id}
        if self.external_links:
            linked = {other for other in self.links.get(occ.occ_id, ()) if other in self.occurrences}
        else:
            linked, near = self._matches(occ)
            for other in near:
                self.near[occ.occ_id].add(other)
                self.near[other].add(occ.occ_id)
        for other in sorted(linked):
            self._union1(occ.occ_id, other)
        for token in occ.documents:
            self.by_document[token].add(occ.occ_id)
        for token in occ.contacts:
            self.by_contact[token].add(occ.occ_id)
        self.by_subject[occ.subject_key_id].add(occ.occ_id)

    def _matches(self, occ: PersonOccurrence) -> tuple[set[str], set[str]]:
        """Level-1 links and near-date links of a newcomer, found in this process (the link stage does this
        partitioned)."""
        # What is filed under each of its `nd:` keys, by date: read once, for the near links and the filing.
        filed = {k: self._reps_by_date(k) for v in occ.variants() for k in v.ny_keys if k.startswith("nd:")}
        linked, near = self._matching(occ), self._near_matching(occ, filed)
        for variant, key_index in self._fuzzy_keys(occ):
            for key, index in key_index:
                if index is self.near_reps and len(filed[key].get(variant.dob_key, ())) >= NEAR_REPS:
                    continue  # enough of this name and date filed under the key already
                index[key].add(occ.occ_id)
        return linked, near

    def _hand_over_near(self, gone: set[str]) -> None:
        """Before occurrences go: their near links, and their place among the few filed per date under an `nd:`
        key, pass to another occurrence of the same name and date in their cluster (one a rebuild would have
        linked to), so that a namesake's erasure neither cuts a pair nor hides a date."""
        for occ_id in sorted(gone):
            occ = self.occurrences[occ_id]
            keys = {k for v in occ.variants() for k in v.ny_keys if k.startswith("nd:")}
            if not keys or not occ.dob_key:
                continue
            heirs = [
                self.occurrences[m]
                for m in sorted(self.level1_members[self.uf.find(occ_id)])
                if m not in gone
                and self.occurrences[m].dob_key == occ.dob_key
                and keys & set(self.occurrences[m].ny_keys)
            ]
            for neighbour in sorted(self.near.get(occ_id, ())):
                if neighbour in gone or neighbour not in self.occurrences:
                    continue
                heir = next((h for h in heirs if near_match_any(self.occurrences[neighbour], h)), None)
                if heir is not None:
                    self.near[neighbour].add(heir.occ_id)
                    self.near[heir.occ_id].add(neighbour)
            for key in sorted(keys):
                if occ_id not in self.near_reps.get(key, ()):
                    continue
                filed = self.near_reps[key]
                for heir in heirs:
                    if len(self._reps_by_date(key).get(occ.dob_key, ())) > NEAR_REPS:
                        break  # the one going is still counted
                    if key in heir.ny_keys:
                        filed.add(heir.occ_id)

    def _dob_under(self, occ_id: str, key: str) -> str | None:
        """The date-of-birth key of an occurrence under the linkage key version that made `key`."""
        return next((v.dob_key for v in self.occurrences[occ_id].variants() if key in v.ny_keys), None)

    def _reps_by_date(self, key: str) -> dict[str | None, list[str]]:
        grouped: dict[str | None, list[str]] = defaultdict(list)
        for other in sorted(self.near_reps.get(key, ())):
            grouped[self._dob_under(other, key)].append(other)
        return grouped

    def _near_matching(self, occ: PersonOccurrence, filed: dict[str, dict[str | None, list[str]]]) -> set[str]:
        """The occurrences held that `occ` is near (`near_match`): under each of its `nd:` keys, one per other
        date of birth filed there (`filed`, by key and date: any of a date reaches its cluster)."""
        found: set[str] = set()
        for variant in occ.variants():
            for key in variant.ny_keys:
                if not key.startswith("nd:"):
                    continue
                for date, reps in filed[key].items():
                    if date == variant.dob_key:
                        continue
                    found |= next(({r} for r in reps if near_match_any(occ, self.occurrences[r])), set())
        found.discard(occ.occ_id)
        return found

    def _matching(self, occ: PersonOccurrence, among: set[str] | None = None) -> set[str]:
        """The occurrences held (or of `among`) that `occ` links to at level 1: a shared document, or a
        strong fuzzy match."""
        linked = {other for token in occ.documents for other in self.by_document.get(token, ())}
        # With a full DOB, a candidate with another full DOB can never match: only the same DOB,
        # or name+year candidates that have no full DOB. This keeps candidate sets, and so the
        # cost per report, flat as the population grows. Each linkage key version the occurrence
        # carries is looked up on its own: keys of different versions never meet.
        for variant in occ.variants():
            candidates = set(self.by_dob.get(variant.dob_key, ())) if variant.dob_key else set()
            ny_index = self.by_ny_without_dob if variant.dob_key else self.by_ny
            for key in variant.ny_keys:
                if not key.startswith("nd:"):  # near dates are no level-1 match (`_near_matching`)
                    candidates |= ny_index.get(key, set())
            if among is not None:
                candidates &= among
            linked |= {other for other in candidates if strong_match_any(variant, self.occurrences[other])}
        if among is not None:
            linked &= among
        linked.discard(occ.occ_id)
        return linked

    def _fuzzy_keys(
        self, occ: PersonOccurrence
    ) -> list[tuple[PersonOccurrence, list[tuple[str, MutableMapping[str, set[str]]]]]]:
        """Per linkage key version of `occ`: the fuzzy indexes it is held in, and under which key."""
        out = []
        for variant in occ.variants():
            keys: list[tuple[str, MutableMapping[str, set[str]]]] = []
            if variant.dob_key:
                keys.append((variant.dob_key, self.by_dob))
            for key in variant.ny_keys:
                if key.startswith("nd:"):
                    keys.append((key, self.near_reps))
                    continue
                keys.append((key, self.by_ny))
                if not variant.dob_key:
                    keys.append((key, self.by_ny_without_dob))
            out.append((variant, keys))
        return out

    # -- level 2 ---------------------------------------------------------------------------
    def _conflict(self, r1: str, r2: str) -> bool:
        m1, m2 = self.level1_members[r1], self.level1_members[r2]
        dobs1 = {self.occurrences[o].dob_key for o in m1} - {None}
        dobs2 = {self.occurrences[o].dob_key for o in m2} - {None}
        # Known dates that disagree conflict, unless two of them are one slip apart under one name (`near_match`).
        if dobs1 and dobs2 and not dobs1 & dobs2 and not self._near_pair(m1, m2):
            return True
        clks1 = [c for o in m1 if (c := self.occurrences[o].clk) is not None]
        clks2 = [c for o in m2 if (c := self.occurrences[o].clk) is not None]
        return bool(clks1 and clks2) and max(dice(a, b) for a in clks1 for b in clks2) < CONFLICT_DICE

    def _near_pair(self, m1: Iterable[str], m2: Iterable[str]) -> bool:
        return any(near_match_any(self.occurrences[a], self.occurrences[b]) for a in m1 for b in m2)

    def contact_roots(self, token: str) -> set[str]:
        return {self.uf.find(o) for o in self.by_contact.get(token, ())}

    def is_hot(self, token: str) -> bool:
        return len(self.contact_roots(token)) > self.contact_limit

    def near_roots(self, root: str) -> set[str]:
        """The level-1 clusters a near-date link joins to cluster `root`."""
        return set(self._near_roots(root))

    def _near_roots(self, root: str) -> Iterator[str]:
        """The same, one at a time (a question about a crowd is answered by its first few)."""
        seen = {root}
        for occ in sorted(self.level1_members[root]):  # sorted: the same answer in every process
            for other in sorted(self.near.get(occ, ())):
                if other in self.occurrences and (found := self.uf.find(other)) not in seen:
                    seen.add(found)
                    yield found

    def _dates_around(self, roots: Iterable[str], most: int) -> int:
        """How many distinct dates of birth these clusters and every cluster near them hold, counting to `most`."""
        dates: list[set[str]] = []
        for root in itertools.chain.from_iterable(itertools.chain([r], self._near_roots(r)) for r in roots):
            for keys in self._dates(root):
                # One date under one key version or more: an occurrence of a rotation's overlap carries both keys,
                # and joins the groups each named it by.
                joined = [held for held in dates if held & keys]
                dates = [held for held in dates if not held & keys] + [set(keys).union(*joined)]
                if len(dates) >= most:
                    return most
        return len(dates)

    def _dates(self, root: str) -> list[set[str]]:
        """The distinct full dates of birth of a cluster, each as the set of its keys (one per key version)."""
        found = {
            frozenset(v.dob_key for v in self.occurrences[o].variants() if v.dob_key)
            for o in self.level1_members[root]
            if self.occurrences[o].dob_key
        }
        return [set(keys) for keys in sorted(found, key=sorted)]

    def _near_usable(self, r1: str, r2: str) -> bool:
        """A near-date link joins two clusters only if it is the one reading: the two clusters and every
        cluster near either hold two dates of birth between them. A third date near one of them means
        namesakes born days apart, not one person with a slip, and then no near link of theirs joins anyone
        (whichever arrived first: the state does not depend on the order reports arrive in)."""
        return self._dates_around((r1, r2), 3) <= 2

    def _level2_component(self, start: str) -> set[str]:
        component, queue = {start}, [start]
        while queue:
            root = queue.pop()
            for occ in self.level1_members[root]:
                for token in self.occurrences[occ].contacts:
                    roots = self.contact_roots(token)
                    if len(roots) > self.contact_limit:
                        continue
                    for other in roots - component:
                        if not self._conflict(root, other):
                            component.add(other)
                            queue.append(other)
            for other in self.near_roots(root) - component:
                if self._near_usable(root, other):
                    component.add(other)
                    queue.append(other)
        return component

    def _relabel(self, roots: Iterable[str]) -> set[str]:
        """Recompute the entities around these level-1 roots. Returns the entity ids touched, old and new."""
        touched: set[str] = set()
        done: set[str] = set()
        self.absorbed = {}
        for root in sorted(roots):
            if root in done:
                continue
            component = self._level2_component(root)
            done |= component
            members = set().union(*(self.level1_members[r] for r in component))
            entity = min(members)
            for occ in members:
                old = self.entity_of.get(occ)
                if old is not None and old != entity:
                    touched.add(old)
                    old_members = self.entity_members.get(old)
                    if old_members is not None:
                        old_members.discard(occ)
                        if not old_members:
                            del self.entity_members[old]
                self.entity_of[occ] = entity
            self.entity_members[entity] = members
            touched.add(entity)
        # An entity id that no longer exists went into whichever entity now holds that member.
        self.absorbed = {
            old: self.entity_of[old] for old in touched if old not in self.entity_members and old in self.entity_of
        }
        return touched

    # -- the public steps ------------------------------------------------------------------
    def add(self, report: ReportFacts) -> set[str]:
        """Add a report; returns the person entities whose membership may have changed."""
        if report.report_id in self.reports or report.report_id in self.retracted:
            return set()  # re-delivery changes nothing; a retracted report is never evidence
        report = self._named(report)
        people = [p for p in report.people if p.subject_key_id not in self.erased]
        if len(people) != len(report.people):  # else the scopes share one object: memory per report, not per scope
            report = ReportFacts(**{**report.__dict__, "people": tuple(people)})
        self.reports[report.report_id] = report
        self._count_considered(report, 1)
        for token in report.organisations:
            self.by_org[token].add(report.report_id)
        for occ in people:
            self._add_person(occ)
        return self._settle({o.occ_id for o in people})

    def _named(self, report: ReportFacts) -> ReportFacts:
        """The report with each identifier token replaced by the name this correlator knows it by."""
        for group in report.aliases:
            name = next((self.token_names[t] for t in group if t in self.token_names), group[-1])
            for token in group:
                self.token_names.setdefault(token, name)
        if self.tables is None and not self.token_names:
            return report  # no rotation has happened: every token is its own name (on disk: that is a scan)

        def named(tokens: Iterable[str]) -> tuple[str, ...]:
            return tuple(sorted({self.token_names.get(t, t) for t in tokens}))

        people = tuple(replace(p, documents=named(p.documents), contacts=named(p.contacts)) for p in report.people)
        return replace(report, people=people, organisations=named(report.organisations))

    def add_links(self, links: Iterable[Link]) -> set[str]:
        """Level-1 links from the link stage (union stage only). Returns the entities that may have changed.

        A link may arrive before the report of either end: it is kept and applies when both are here.
        """
        ends: set[str] = set()
        for link in links:
            held = self.near if link.basis == "dob_near" else self.links
            held[link.a].add(link.b)
            held[link.b].add(link.a)
            if link.a in self.occurrences and link.b in self.occurrences:
                if held is self.links:
                    self._union1(link.a, link.b)
                ends |= {link.a, link.b}
        return self._settle(ends)

    def _settle(self, occ_ids: Iterable[str]) -> set[str]:
        """Recompute the entities around level-1 clusters that changed."""
        roots = {self.uf.find(o) for o in occ_ids}
        for root in list(roots):
            for occ in self.level1_members[root]:
                for token in self.occurrences[occ].contacts:
                    roots |= self.contact_roots(token)
            # A new date near a cluster can make its near links ambiguous, or a cluster's near links usable; not
            # in a crowd (three dates around it already): its near links join nobody, before or after.
            roots |= {near for near in self._near_roots(root) if self._dates_around((near,), 4) <= 3}
        # Whole previous entities around these roots: a contact turning hot can split one.
        previous = {self.entity_of[m] for r in roots for m in self.level1_members[r] if m in self.entity_of}
        roots |= {self.uf.find(m) for e in previous for m in self.entity_members.get(e, ())}
        return self._relabel(roots)

    def affected(self, report_id: str | None, entities: set[str]) -> dict[str, set[str]]:
        """Entity keys, by kind, whose requirements a report (and the entities it touched) may change."""
        occs = [self.occurrences[o] for e in entities for o in self.entity_members.get(e, ())]
        if report_id is not None:
            occs += list(self.reports[report_id].people)
        report_ids = {o.report_id for o in occs} | ({report_id} if report_id else set())
        return {
            "person": set(entities),  # vanished ones too: their signals must be re-emitted as merged
            "organisation": {"org:" + t for r in report_ids for t in self.reports[r].organisations},
            "document": {"doc:" + t for o in occs for t in o.documents},
            "contact": {"contact:" + t for o in occs for t in o.contacts},
        }

    def evaluate_keys(self, keys: dict[str, set[str]]) -> dict[tuple[str, str], Signal | None]:
        """The signal (or None) for each requirement over the given entity keys."""
        out: dict[tuple[str, str], Signal | None] = {}
        for requirement in self.plan:
            for key in sorted(keys.get(requirement.entity, ())):
                reports, minor = self._entity_reports(requirement.entity, key, requirement.roles)
                out[(requirement.id, key)] = self._signal(requirement, key, reports, minor) if reports else None
        return out

    def _entity_reports(
        self, kind: str, key: str, roles: frozenset[str] = frozenset()
    ) -> tuple[list[ReportFacts], bool]:
        if kind == "person":
            occs = [self.occurrences[o] for o in self.entity_members.get(key, ())]
            # Only the occurrences in the roles asked about count (a person is a victim in one report,
            # a witness in another): the question is about what happened to them as a victim.
            if roles:
                occs = [o for o in occs if o.role in roles]
        elif kind == "organisation":
            return [self.reports[r] for r in sorted(self.by_org.get(key.removeprefix("org:"), ()))], False
        elif kind == "document":
            occs = [self.occurrences[o] for o in self.by_document.get(key.removeprefix("doc:"), ())]
        else:
            occs = [self.occurrences[o] for o in self.by_contact.get(key.removeprefix("contact:"), ())]
        return [self.reports[r] for r in sorted({o.report_id for o in occs})], any(o.minor for o in occs)

    def erase(self, subject_key_ids: Iterable[str]) -> dict[str, set[str]]:
        """Drop erased people from every entity and link. Returns the entity keys, by kind, whose signals may
        have changed (as `affected`)."""
        new = set(subject_key_ids) - self.erased
        self.erased |= new
        if not new:
            return {}
        gone = {o for subject in new for o in self.by_subject.pop(subject, ())}
        return self._remove(gone, set())

    def retract(self, report_ids: Iterable[str]) -> dict[str, set[str]]:
        """Drop reports their agencies withdrew (or a scope may no longer see), and every link they made.
        Returns the entity keys, by kind, whose signals may have changed (as `affected`)."""
        ids = set(report_ids) - self.retracted
        self.retracted |= ids
        held = {r for r in ids if r in self.reports}
        if not held:
            return {}
        return self._remove({o.occ_id for r in held for o in self.reports[r].people}, held)

    def _remove(self, gone: set[str], reports: set[str]) -> dict[str, set[str]]:
        """Take occurrences `gone` (and whole reports `reports`) out, as if they had never been added, touching
        only the level-1 clusters and entities that held them (a rebuild would read every report)."""
        entities = {self.entity_of[o] for o in gone if o in self.entity_of}
        before = {e: set(self.entity_members.get(e, ())) for e in entities}
        keys = self.affected(None, entities)
        keys["organisation"] |= {"org:" + t for r in reports for t in self.reports[r].organisations}
        changed = reports | {self.occurrences[o].report_id for o in gone}
        for report_id in sorted(changed):
            self._count_considered(self.reports[report_id], -1)
        for report_id in reports:
            for token in self.reports[report_id].organisations:
                _discard(self.by_org, token, report_id)
            del self.reports[report_id]
        for report_id in changed - reports:  # people erased from a report that stays
            report = self.reports[report_id]
            self.reports[report_id] = kept = without(report, gone)
            self._count_considered(kept, 1)
        freed: set[str] = set()  # contacts of the occurrences gone: clusters sharing them may link now
        self._hand_over_near(gone)
        for occ_id in gone:
            occ = self.occurrences.pop(occ_id)
            for token in occ.documents:
                _discard(self.by_document, token, occ_id)
            for token in occ.contacts:
                _discard(self.by_contact, token, occ_id)
                freed |= self.by_contact.get(token, set())
            _discard(self.by_subject, occ.subject_key_id, occ_id)
            for other in self.near.pop(occ_id, set()):  # a date gone: near links around it may be the one reading now
                _discard(self.near, other, occ_id)
                if other in self.occurrences:
                    freed.add(other)
            for _, key_index in self._fuzzy_keys(occ):
                for key, index in key_index:
                    _discard(index, key, occ_id)
            entity = self.entity_of.pop(occ_id, None)
            if entity is not None and entity in self.entity_members:
                self.entity_members[entity].discard(occ_id)
        # Level 1: each cluster that held an occurrence gone is split into its remaining members, which link
        # again among themselves only (any other link would have joined them to another cluster before).
        remaining: set[str] = set()
        for root in {self.uf.find(o) for o in gone}:
            members = self.level1_members.pop(root)
            for member in members:
                del self.uf.parent[member]
            rest = members - gone
            for member in rest:
                self.uf.add(member)
                self.level1_members[member] = {member}
            for member in sorted(rest):
                if self.external_links:
                    linked = self.links.get(member, set()) & rest
                else:
                    linked = self._matching(self.occurrences[member], rest)
                for other in sorted(linked):
                    self._union1(member, other)
            remaining |= rest
        for entity in entities:  # an entity whose every member went is gone
            if not self.entity_members.get(entity, True):
                del self.entity_members[entity]
        start = remaining | (freed - gone) | {m for e in entities for m in self.entity_members.get(e, ())}
        self.absorbed = {}
        touched = (self._settle(start) if start else set()) | entities
        # Entities that joined (a contact back under the limit, a conflict gone) continue in the one that took
        # them in, as `_relabel` found; an entity whose smallest member left has a new id, and its signal
        # continues there too (as after a rebuild).
        for entity, members in before.items():
            alive = sorted(m for m in members if m in self.entity_of)
            if entity not in self.entity_members and alive:
                self.absorbed[entity] = self.entity_of[alive[0]]
        for kind, found in self.affected(None, touched).items():
            keys[kind] |= found
        return keys

    def _count_considered(self, report: ReportFacts, step: int) -> None:
        for requirement in self.plan:
            if self._considers(requirement, report):
                self.considered[requirement.id] += step
                self.reporting[requirement.id][report.agency] += step
                if self.considered[requirement.id] <= 0:
                    del self.considered[requirement.id]
                if self.reporting[requirement.id][report.agency] <= 0:
                    del self.reporting[requirement.id][report.agency]

    # -- requirements ----------------------------------------------------------------------
    def coverage(self, book: SignalBook) -> dict[str, dict[str, Any]]:
        """Per requirement: open signals, reports it considered, agencies contributing (pure).

        From counts kept as reports and signal versions arrive, so its cost does not grow with history."""
        out = {}
        for requirement in self.plan:
            rid = requirement.id
            out[rid] = {
                "requirement_id": rid,
                "question": requirement.question,
                "priority": requirement.priority,
                "open_signals": book.open_signals.get(rid, 0),
                "reports_considered": self.considered.get(rid, 0),
                "reports_in_signals": book.reports_in_signals(rid),
                "agencies_contributing": sorted(book.open_agencies.get(rid, ())),
                "agencies_reporting": sorted(self.reporting.get(rid, ())),
            }
        return out

    @staticmethod
    def _considers(requirement: Requirement, report: ReportFacts) -> bool:
        if requirement.entity == "person":
            return any(not requirement.roles or p.role in requirement.roles for p in report.people)
        if requirement.entity == "organisation":
            return bool(report.organisations)
        if requirement.entity == "document":
            return any(p.documents for p in report.people)
        return any(p.contacts for p in report.people)

    def all_keys(self) -> dict[str, set[str]]:
        return {
            "person": set(self.entity_members),
            "organisation": {"org:" + t for t in self.by_org},
            "document": {"doc:" + t for t in self.by_document},
            "contact": {"contact:" + t for t in self.by_contact},
        }

    def evaluate(self) -> dict[tuple[str, str], Signal]:
        """Every open signal, keyed by (requirement, entity key). Pure function of the state."""
        return {k: s for k, s in self.evaluate_keys(self.all_keys()).items() if s is not None}

    def _signal(self, req: Requirement, key: str, reports: list[ReportFacts], minor: bool) -> Signal | None:
        window = timedelta(days=req.window_days)
        ordered = sorted(reports, key=lambda r: (r.observed_at, r.report_id))
        matched: list[ReportFacts] | None = None
        for i, first in enumerate(ordered):  # the earliest window that answers the question
            span = [r for r in ordered[i:] if r.observed_at - first.observed_at <= window]
            if self._answers(req, key, span, minor):
                matched = ordered
                break
        if matched is None:
            return None
        elements = set().union(*(r.elements for r in matched))
        groups = groups_covered(elements)
        needed = {"ACT", "PURPOSE"} if minor else {"ACT", "MEANS", "PURPOSE"}
        coverage = len(groups & needed) / len(needed) if req.legal_definition else 1.0
        entity_key = key if req.entity != "person" else min(self.entity_members[key])
        return Signal(
            signal_id=self.names.signal_id(req.id, entity_key),
            requirement_id=req.id,
            entity=self.names.entity(entity_key),
            status="open",
            merged_into=None,
            report_ids=tuple(r.report_id for r in matched),
            agencies=tuple(sorted({r.agency for r in matched})),
            elements=tuple(sorted(elements)),
            act_means_purpose=tuple(g for g in ("ACT", "MEANS", "PURPOSE") if g in groups),
            minor_involved=minor,
            score=score(matched, coverage),
            first_seen=matched[0].observed_at,
            last_seen=max(r.observed_at for r in matched),
            updated_at=max(r.accepted_at for r in matched),
        )

    def _answers(self, req: Requirement, key: str, span: list[ReportFacts], minor: bool) -> bool:
        agencies = {r.agency for r in span}
        elements = set().union(*(r.elements for r in span)) if span else set()
        if len(agencies) < req.min_agencies:
            return False
        if req.legal_definition and not covers_requirement(elements, minor=minor):
            return False
        if req.required_elements and not req.required_elements <= elements:
            return False
        if req.min_victims:
            victims = {
                self.entity_of[o.occ_id]
                for r in span
                for o in r.people
                if o.role == "SUSPECTED_VICTIM" and o.occ_id in self.entity_of
            }
            if len(victims) < req.min_victims:
                return False
        if req.min_people:
            token = key.removeprefix("contact:")
            people = {
                self.entity_of[o]
                for o in self.by_contact.get(token, ())
                if self.occurrences[o].report_id in {r.report_id for r in span}
            }
            if len(people) < req.min_people:
                return False
        if req.first:
            firsts = [r.observed_at for r in span if r.indicator_type in req.first]
            if not firsts or not any(r.indicator_type in req.then and r.observed_at > min(firsts) for r in span):
                return False
        for indicator_type, element in req.all_of:
            if not any(r.indicator_type == indicator_type and (element is None or element in r.elements) for r in span):
                return False
        return True


def signal_row(signal: Signal) -> list[Any]:
    return [
        signal.signal_id,
        signal.requirement_id,
        signal.entity,
        signal.status,
        signal.merged_into,
        list(signal.report_ids),
        list(signal.agencies),
        list(signal.elements),
        list(signal.act_means_purpose),
        signal.minor_involved,
        signal.score,
        when(signal.first_seen),
        when(signal.last_seen),
        when(signal.updated_at),
    ]


def read_signal(row: Any) -> Signal:
    sid, requirement, entity, status, merged, reports, agencies, elements, amp, minor, score, first, last, updated = (
        checked(row, list)
    )
    return Signal(
        signal_id=text(sid),
        requirement_id=text(requirement),
        entity=text(entity),
        status=text(status),
        merged_into=maybe(merged, text),
        report_ids=texts(reports),
        agencies=texts(agencies),
        elements=texts(elements),
        act_means_purpose=texts(amp),
        minor_involved=flag(minor),
        score=float(checked(score, (int, float))),
        first_seen=moment(first),
        last_seen=moment(last),
        updated_at=moment(updated),
    )


class EntityMap(MutableMapping[tuple[str, str], str]):
    """A signal book's map (requirement, entity key) -> signal id, over a map keyed by text, with the reverse
    (signal id -> requirement and key) kept beside it: a restore finds the entity of a signal it read."""

    def __init__(self, forward: MutableMapping[str, str], reverse: MutableMapping[str, str]) -> None:
        self.forward = forward
        self.reverse = reverse

    def __getitem__(self, pair: tuple[str, str]) -> str:
        return self.forward[_joined(pair)]

    def get(self, pair: tuple[str, str], default: Any = None) -> Any:
        return self.forward.get(_joined(pair), default)

    def __contains__(self, pair: object) -> bool:
        return isinstance(pair, tuple) and _joined(pair) in self.forward

    def __setitem__(self, pair: tuple[str, str], signal_id: str) -> None:
        joined = _joined(pair)
        held = self.forward.get(joined)
        if held == signal_id:
            return
        if held is not None:
            self.reverse.pop(held, None)
        self.forward[joined] = signal_id
        self.reverse[signal_id] = joined

    def __delitem__(self, pair: tuple[str, str]) -> None:
        signal_id = self.forward.pop(_joined(pair))
        self.reverse.pop(signal_id, None)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for joined in self.forward:
            yield _split(joined)

    def __len__(self) -> int:
        return len(self.forward)

    def key_of(self, signal_id: str) -> tuple[str, str] | None:
        joined = self.reverse.get(signal_id)
        return None if joined is None else _split(joined)


def _joined(pair: tuple[str, str]) -> str:
    return f"{pair[0]}|{pair[1]}"  # a requirement id has no "|"


def _split(joined: str) -> tuple[str, str]:
    requirement_id, key = joined.split("|", 1)
    return requirement_id, key


def _read_version(raw: str) -> tuple[int, Signal]:
    row = decode_json(raw)
    version, encoded = checked(row, list)
    return int(checked(version, int)), read_signal(encoded)


VERSION: Codec[tuple[int, Signal]] = Codec(lambda v: dumps([v[0], signal_row(v[1])]), _read_version)


@dataclass
class SignalBook:
    """Versions of emitted signals. A change of content is a new version; an entity absorbed into
    another re-emits its signal as merged; a signal whose question is no longer answered is closed."""

    versions: MutableMapping[str, tuple[int, Signal]] = field(default_factory=dict)
    # Over the open signals, per requirement: how many, how often each report (keyed "requirement|report") and
    # agency appears, and how many distinct reports.
    open_signals: MutableMapping[str, int] = field(default_factory=Counter)
    open_reports: MutableMapping[str, int] = field(default_factory=dict)
    reports_open: MutableMapping[str, int] = field(default_factory=Counter)
    open_agencies: MutableMapping[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    tables: Tables | None = None  # None: in memory; else tables on disk (as `Correlator.tables`)

    def __post_init__(self) -> None:
        if self.tables is None:
            self.by_entity = EntityMap({}, {})
            return
        t = self.tables
        self.versions = t.map("versions", VERSION)
        self.by_entity = EntityMap(t.map("by_entity", TEXT), t.map("entity_of_signal", TEXT))
        self.open_signals = t.map("open_signals", INTEGER, int)
        self.open_reports = t.map("open_reports", INTEGER)
        self.reports_open = t.map("reports_open", INTEGER, int)
        self.open_agencies = t.map("open_agencies", COUNTS, Counter, mutable=True)

    def _set(self, version: int, signal: Signal) -> None:
        """The one place a version is stored: the open-signal counts follow it."""
        current = self.versions.get(signal.signal_id)
        if current is not None and current[1].status == "open":
            self._count(current[1], -1)
        self.versions[signal.signal_id] = (version, signal)
        if signal.status == "open":
            self._count(signal, 1)

    def _count(self, signal: Signal, step: int) -> None:
        requirement = signal.requirement_id
        self.open_signals[requirement] += step
        for report in signal.report_ids:
            key = f"{requirement}|{report}"
            count = self.open_reports.get(key, 0) + step
            if count > 0:
                self.open_reports[key] = count
            else:
                self.open_reports.pop(key, None)
            if count == (1 if step > 0 else 0):  # the report's first open signal came, or its last went
                self.reports_open[requirement] += step
        agencies = self.open_agencies[requirement]
        for agency in signal.agencies:
            agencies[agency] += step
            if agencies[agency] <= 0:
                del agencies[agency]

    def reports_in_signals(self, requirement_id: str) -> int:
        return self.reports_open.get(requirement_id, 0)

    def load(self, version: int, signal: Signal, requirement_id: str, entity_key: str | None = None) -> None:
        current = self.versions.get(signal.signal_id)
        if current is None or version > current[0]:
            self._set(version, signal)
        if entity_key is not None and signal.status == "open":
            self.by_entity[(requirement_id, entity_key)] = signal.signal_id

    def apply(
        self, results: dict[tuple[str, str], Signal | None], entity_of_key: dict[str, str]
    ) -> list[tuple[int, Signal]]:
        """New versions to emit for these results. `entity_of_key` maps a vanished person entity key
        to the entity that absorbed it (for merged)."""
        self._prefetch(results)
        emitted: list[tuple[int, Signal]] = []
        for (requirement_id, key), signal in sorted(results.items(), key=lambda kv: kv[0]):
            previous_id = self.by_entity.get((requirement_id, key))
            if signal is not None:
                emitted += self.put(signal)
                self.by_entity[(requirement_id, key)] = signal.signal_id
                continue
            if previous_id is None:
                continue
            del self.by_entity[(requirement_id, key)]
            _, last = self.versions[previous_id]
            if last.status != "open":
                continue
            absorber = entity_of_key.get(key)
            into = self.by_entity.get((requirement_id, absorber)) if absorber else None
            if into is None and absorber is not None:
                absorbing = results.get((requirement_id, absorber))
                into = absorbing.signal_id if absorbing is not None else None
            status = "merged" if into and into != previous_id else "closed"
            emitted += self.put(
                Signal(**{**last.__dict__, "status": status, "merged_into": into if status == "merged" else None})
            )
        return emitted

    def _prefetch(self, results: dict[tuple[str, str], Signal | None]) -> None:
        """On disk: read what applying these results looks up, a query per table (most keys have no signal)."""
        if self.tables is None or not results:
            return
        signals = [s for s in results.values() if s is not None]
        for table, keys in (
            (self.by_entity.forward, {_joined(pair) for pair in results}),
            (self.versions, {s.signal_id for s in signals}),
            (self.open_reports, {f"{s.requirement_id}|{r}" for s in signals for r in s.report_ids}),
        ):
            prefetch(table, keys)

    def put(self, signal: Signal) -> list[tuple[int, Signal]]:
        current = self.versions.get(signal.signal_id)
        if current is not None and current[1] == signal:
            return []
        version = 1 if current is None else current[0] + 1
        self._set(version, signal)
        return [(version, signal)]

    def latest(self) -> list[tuple[int, Signal]]:
        return sorted(self.versions.values(), key=lambda v: v[1].signal_id)


NEAR_REPS = 2  # occurrences filed per date under an `nd:` key


def _discard(index: MutableMapping[str, set[str]], key: str, item: str) -> None:
    """Take `item` out of an index's set under `key`, and the key with its last item."""
    items = index.get(key)
    if items is not None:
        items.discard(item)
        if not items:
            del index[key]


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def evaluate_against_truth(
    signals: list[Signal], truth: dict[str, list[dict[str, Any]]], threshold: float = 0.8
) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 per requirement: a signal matches a true set when their report sets
    overlap with Jaccard >= threshold (one to one); merged and closed signals do not count."""
    out: dict[str, dict[str, float]] = {}
    for requirement_id, true_sets in sorted(truth.items()):
        raised = [s for s in signals if s.requirement_id == requirement_id and s.status == "open"]
        unmatched = list(range(len(true_sets)))
        hits = 0
        for signal in sorted(raised, key=lambda s: s.signal_id):
            best, best_j = None, threshold
            for index in unmatched:
                j = jaccard(signal.report_ids, true_sets[index]["report_ids"])
                if j >= best_j:
                    best, best_j = index, j
            if best is not None:
                unmatched.remove(best)
                hits += 1
        precision = hits / len(raised) if raised else (1.0 if not true_sets else 0.0)
        recall = hits / len(true_sets) if true_sets else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[requirement_id] = {
            "signals": len(raised),
            "truth": len(true_sets),
            "matched": hits,
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
        }
    return out
