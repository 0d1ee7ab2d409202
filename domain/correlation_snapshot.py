"""The union stage's state (`ScopedCorrelation`) as versioned JSON, and back: pure functions, no pickle.

A snapshot lets the union stage restore from it plus the tail of its inputs instead of replaying all history
(streams/agents/correlate_signals.py). It holds what cannot be derived cheaply: per scope the reports its
correlator holds, its level-1 roots, its entities, its coverage counts, its signal book's versions, what it
holds and until when; and the shared facts, links, grants, erasures and retractions. What is cheap to derive
(the occurrences, the token indexes, level-1 members, the book's open counts) is derived on reading. What
concerns one batch only (touched, absorbed, pending keys) and what a full restore does not have either (the
coverage as last written) is not kept. Each book's entity map is kept (version 2): after `resume`,
`settle_loaded` evaluates only the entity keys the tail changed, where a full restore evaluates every one.

Text only: a snapshot someone altered can hold wrong state, never run code. Another format version, another
plan, other partners or another pseudonym key, or anything malformed: `SnapshotError`, and the stage replays
history instead. An erased subject's people are left out of the report facts a snapshot holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any, TypeVar

from domain.correlate import Correlator, Requirement, Signal, SignalBook, _UnionFind
from domain.facts import ReportFacts
from domain.scoped import HUB_SCOPE, Held, Rules, ScopedCorrelation, _Scope, restrict
from domain.state_codec import (
    checked as _check,
)
from domain.state_codec import (
    flag as _flag,
)
from domain.state_codec import (
    maybe as _maybe,
)
from domain.state_codec import (
    moment as _moment,
)
from domain.state_codec import (
    read_report as _read_report,
)
from domain.state_codec import (
    report_row as _report,
)
from domain.state_codec import (
    text as _text,
)
from domain.state_codec import (
    texts as _texts,
)
from domain.state_codec import (
    when as _when,
)
from domain.working_set import StateError

FORMAT = "tiphub.correlation-snapshot"
VERSION = 2  # 2: each book's entity map is kept (a restore maps only what its tail changed)
T = TypeVar("T")


# A snapshot this release cannot use (format, configuration, or content): replay history instead.
SnapshotError = StateError


def fingerprint(plan: list[Requirement], pseudonym_key: bytes, partners: Iterable[str], contact_limit: int) -> str:
    """What a snapshot was built under: the plan, the partners, the contact limit and (by a MAC, not the key
    itself) the pseudonym key. A change of any makes the snapshot's entities and signals another state's."""
    plan_text = json.dumps([_plain(asdict(r)) for r in plan], sort_keys=True)
    key_id = hmac.new(pseudonym_key, b"tiphub/correlation-snapshot/key", hashlib.sha256).hexdigest()[:16]
    config = json.dumps([plan_text, sorted(partners), contact_limit, key_id])
    return hashlib.sha256(config.encode()).hexdigest()[:32]


def _plain(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -- encoding -------------------------------------------------------------------------------------------------
def _signal(signal: Signal) -> list[Any]:
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
        _when(signal.first_seen),
        _when(signal.last_seen),
        _when(signal.updated_at),
    ]


class _RulesTable:
    """Field rules written once each: every decision under one agreement gives the same rules."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []
        self._index: dict[tuple[tuple[str, str], ...], int] = {}

    def held(self, held: Held) -> list[Any]:
        if held.rules is None:
            return [_when(held.retain_until), None]
        key = tuple(sorted(held.rules.items()))
        if key not in self._index:
            self._index[key] = len(self.rows)
            self.rows.append(dict(key))
        return [_when(held.retain_until), self._index[key]]


def _stored(report: ReportFacts, source: ReportFacts | None, held: Held | None) -> Any:
    """A correlator's report as written: 0 if it is the shared facts (an agency's own, the hub's), 1 if it is
    what the scope's field rules make of them (`restrict`, derived again on reading), else in full."""
    if source == report:
        return 0
    if source is not None and held is not None and held.rules is not None and restrict(source, held.rules) == report:
        return 1
    return _report(report)


def _correlator(correlator: Correlator, facts: Mapping[str, ReportFacts], held: Mapping[str, Held]) -> dict[str, Any]:
    reports = [_stored(report, facts.get(rid), held.get(rid)) for rid, report in correlator.reports.items()]
    return {
        "reports": [[rid, encoded] for rid, encoded in zip(correlator.reports, reports, strict=True)],
        "erased": sorted(correlator.erased),
        "retracted": sorted(correlator.retracted),
        "links": {occ: sorted(others) for occ, others in correlator.links.items() if others},
        "token_names": correlator.token_names,
        "roots": {occ: correlator.uf.find(occ) for occ in correlator.uf.parent},
        "entities": {entity: sorted(members) for entity, members in correlator.entity_members.items()},
        "considered": dict(correlator.considered),
        "reporting": {rid: dict(counts) for rid, counts in correlator.reporting.items() if counts},
    }


def _scope(scope: _Scope, facts: Mapping[str, ReportFacts], rules: _RulesTable) -> dict[str, Any]:
    return {
        "seq": scope.seq,
        "held": {rid: rules.held(held) for rid, held in scope.held.items()},
        "versions": [[version, _signal(signal)] for version, signal in scope.book.versions.values()],
        # A book is written mapped only when nothing waits for a flush (a snapshot a restore writes may come
        # before its first flush): else it is mapped whole again after reading.
        "by_entity": [[rid, key, sid] for (rid, key), sid in sorted(scope.book.by_entity.items())]
        if not (scope.full or any(scope.keys.values()) or scope.stale)
        else None,
        "correlator": None if scope.correlator is None else _correlator(scope.correlator, facts, scope.held),
    }


def _without(report: ReportFacts, erased: set[str]) -> ReportFacts:
    """The report without erased people (whom no correlator takes in again: an erasure is for good)."""
    if not any(p.subject_key_id in erased for p in report.people):
        return report
    return replace(report, people=tuple(p for p in report.people if p.subject_key_id not in erased))


def to_json(state: ScopedCorrelation) -> str:
    """The state as versioned JSON (see the module's docstring for what is kept)."""
    facts = {rid: _without(report, state.erased) for rid, report in state.facts.items()}
    rules = _RulesTable()
    grants = {rid: {s: rules.held(h) for s, h in scopes.items()} for rid, scopes in state.grants.items() if scopes}
    scopes = {name: _scope(scope, facts, rules) for name, scope in state.scopes.items()}
    body = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": fingerprint(state.plan, state.key, state.partners, state.contact_limit),
        "facts": [_report(report) for report in facts.values()],
        "links": {occ: sorted(others) for occ, others in state.links.items() if others},
        "rules": rules.rows,
        "grants": grants,
        "erased": sorted(state.erased),
        "retracted": sorted(state.retracted),
        "scopes": scopes,
    }
    return json.dumps(body, separators=(",", ":"))


# -- decoding -------------------------------------------------------------------------------------------------
def _read_signal(row: Any) -> Signal:
    sid, requirement, entity, status, merged, reports, agencies, elements, amp, minor, score, first, last, updated = (
        _check(row, list)
    )
    return Signal(
        signal_id=_text(sid),
        requirement_id=_text(requirement),
        entity=_text(entity),
        status=_text(status),
        merged_into=_maybe(merged, _text),
        report_ids=_texts(reports),
        agencies=_texts(agencies),
        elements=_texts(elements),
        act_means_purpose=_texts(amp),
        minor_involved=_flag(minor),
        score=float(_check(score, (int, float))),
        first_seen=_moment(first),
        last_seen=_moment(last),
        updated_at=_moment(updated),
    )


def _read_held(row: Any, rules: list[Rules]) -> Held:
    until, ref = _check(row, list)
    if ref is not None and not 0 <= _check(ref, int) < len(rules):
        raise SnapshotError("a reference to rules not held")
    return Held(_maybe(until, _moment), None if ref is None else rules[ref])


def _read_links(value: Any) -> defaultdict[str, set[str]]:
    links: defaultdict[str, set[str]] = defaultdict(set)
    for occ, others in _check(value, dict).items():
        links[occ] = set(_texts(others))
    return links


def _counts(value: Any) -> Counter[str]:
    counts: Counter[str] = Counter()
    for name, count in _check(value, dict).items():
        counts[name] = int(_check(count, int))
    return counts


def _read_correlator(
    body: Any, correlator: Correlator, facts: Mapping[str, ReportFacts], held: Mapping[str, Held]
) -> None:
    """Fill a new correlator (made by the state for its scope) with what a snapshot holds, deriving the rest
    as `Correlator.add` would have built it."""
    body = _check(body, dict)
    c = correlator
    for rid, encoded in _check(body["reports"], list):
        if encoded == 0:
            report = facts[_text(rid)]
        elif encoded == 1:
            rules = held[_text(rid)].rules
            restricted = None if rules is None else restrict(facts[rid], rules)
            if restricted is None:
                raise SnapshotError("a report derived by rules it is not held under")
            report = restricted
        else:
            report = _read_report(encoded)
        c.reports[report.report_id] = report
        for occ in report.people:
            c.occurrences[occ.occ_id] = occ
    c.erased = set(_texts(body["erased"]))
    c.retracted = set(_texts(body["retracted"]))
    c.links = _read_links(body["links"])
    c.token_names = {_text(t): _text(n) for t, n in _check(body["token_names"], dict).items()}
    for occ, root in _check(body["roots"], dict).items():
        if occ not in c.occurrences or root not in c.occurrences:
            raise SnapshotError("a level-1 root of an occurrence not held")
        c.uf.parent[occ] = _text(root)
        c.level1_members.setdefault(root, set()).add(occ)
    if c.uf.parent.keys() != c.occurrences.keys() or any(c.uf.parent[r] != r for r in c.level1_members):
        raise SnapshotError("the level-1 roots do not cover the occurrences")
    for entity, members in _check(body["entities"], dict).items():
        group = set(_texts(members))
        if not group or not group <= c.occurrences.keys():
            raise SnapshotError("an entity of occurrences not held")
        c.entity_members[entity] = group
        for member in group:
            c.entity_of[member] = entity
    c.considered = _counts(body["considered"])
    for rid, counts in _check(body["reporting"], dict).items():
        c.reporting[rid] = _counts(counts)
    for report in c.reports.values():
        for token in report.organisations:
            c.by_org[token].add(report.report_id)
    for occ in c.occurrences.values():
        c.by_subject[occ.subject_key_id].add(occ.occ_id)
        for token in occ.documents:
            c.by_document[token].add(occ.occ_id)
        for token in occ.contacts:
            c.by_contact[token].add(occ.occ_id)
        if not c.external_links:  # the indexes `_matches` keeps
            for variant in occ.variants():
                if variant.dob_key:
                    c.by_dob[variant.dob_key].add(occ.occ_id)
                for key in variant.ny_keys:
                    c.by_ny[key].add(occ.occ_id)
                    if not variant.dob_key:
                        c.by_ny_without_dob[key].add(occ.occ_id)


def from_json(
    text: str, plan: list[Requirement], pseudonym_key: bytes, partners: Iterable[str] = (), contact_limit: int = 3
) -> ScopedCorrelation:
    """The state `to_json` wrote, for this plan, key and partners; SnapshotError for anything else."""
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise SnapshotError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise SnapshotError("not a correlation snapshot")
    if body.get("version") != VERSION:
        raise SnapshotError(f"format version {body.get('version')!r}, this release reads {VERSION}")
    state = ScopedCorrelation(plan, pseudonym_key, partners, contact_limit)
    if body.get("fingerprint") != fingerprint(state.plan, state.key, state.partners, state.contact_limit):
        raise SnapshotError("taken under another Collection Plan, partners, contact limit or pseudonym key")
    try:
        _read_state(body, state)
    except SnapshotError:
        raise
    except (LookupError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"malformed: {type(exc).__name__}: {exc}") from exc
    return state


def _read_state(body: dict[str, Any], state: ScopedCorrelation) -> None:
    # One dict per distinct rules, shared by every Held that has them (never changed in place), and by the
    # decisions that come after the restore.
    rules = [
        state.shared_rules({_text(path): _text(rule) for path, rule in _check(row, dict).items()})
        for row in _check(body["rules"], list)
    ]
    for row in _check(body["facts"], list):
        report = _read_report(row)
        state.facts[report.report_id] = report
    state.links = _read_links(body["links"])
    for rid, scopes in _check(body["grants"], dict).items():
        state.grants[rid] = {_text(s): _read_held(h, rules) for s, h in _check(scopes, dict).items()}
    state.erased = set(_texts(body["erased"]))
    state.retracted = set(_texts(body["retracted"]))
    scopes = _check(body["scopes"], dict)
    for name in sorted(scopes, key=lambda n: n != HUB_SCOPE):
        encoded = _check(scopes[name], dict)
        scope = state.scope(_text(name))  # a correlator for every scope but a partner's, named for the scope
        if (scope.correlator is None) != (encoded["correlator"] is None):
            raise SnapshotError(f"scope {name}: a correlator where this configuration has none, or the reverse")
        scope.seq = int(_check(encoded["seq"], int))
        scope.held = {_text(rid): _read_held(h, rules) for rid, h in _check(encoded["held"], dict).items()}
        book = SignalBook()
        for version, row in _check(encoded["versions"], list):
            signal = _read_signal(row)
            book.load(int(_check(version, int)), signal, signal.requirement_id)
        scope.book = book
        if scope.correlator is not None:
            scope.correlator.uf = _UnionFind()
            _read_correlator(encoded["correlator"], scope.correlator, state.facts, scope.held)
        scope.full = encoded["by_entity"] is None
        for requirement_id, key, signal_id in [] if scope.full else _check(encoded["by_entity"], list):
            # a signal's id is its requirement's and entity key's: a map that says otherwise was altered
            held = book.versions.get(_text(signal_id))
            if (
                scope.correlator is None
                or held is None
                or held[1].status != "open"
                or held[1].requirement_id != requirement_id
                or scope.correlator.names.signal_id(_text(requirement_id), _text(key)) != signal_id
            ):
                raise SnapshotError(f"scope {name}: its book maps an entity to a signal not of it, or not open")
            book.by_entity[(requirement_id, key)] = signal_id


def resume(state: ScopedCorrelation, now: datetime) -> set[tuple[str, str]]:
    """Make a state read from a snapshot (its tail replayed) what a full restore at `now` would have built.

    A full restore judges every sharing decision at `now`: a report whose share has ended since the snapshot
    was never in the recipient's scope. Here it leaves the scope, and its correlator does not keep it as
    withdrawn (a later share brings it back, as it would after a full restore). The books keep the entity map
    the snapshot held (a book written unmapped, or a scope the tail made, is mapped whole); the entity keys
    the tail and the ended shares changed stay pending, for `settle_loaded` to map the versions the tail
    wrote (`_Scope.settle_tail`).
    Returns the (scope, report) pairs that left."""
    left: set[tuple[str, str]] = set()
    for scope in list(state.scopes.values()):
        over = {r for r, held in scope.held.items() if held.retain_until is not None and held.retain_until <= now}
        scope.remove(over)
        if scope.correlator is not None:
            scope.correlator.retracted -= over - state.retracted
        left |= {(scope.name, r) for r in over}
    for scope in state.scopes.values():
        scope.touched, scope.stale = set(), []
        scope.coverage = {}
    return left
