"""Correlation per scope: a report a scope may not see changes nothing that scope is shown, even where it
would join two visible people, answer a requirement or take an entity's smallest member."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.facts import ReportFacts, facts_from_accepted
from domain.linking import KeyIndex, Link, by_partition, sightings_of
from domain.scoped import HUB_SCOPE, Emitted, ScopedCorrelation, release_scope
from tests.correlation_kit import PLAN, Pipeline
from tests.factories import PEOPLE, RECORDED_AS, make_report, person_as_recorded

KEY = b"k" * 32


class EveryField(dict[str, str]):
    """A decision that shares every field exactly."""

    def get(self, key: str, default: object = None) -> str:  # type: ignore[override]
        return "share"


SHARED = EveryField()
SCOPE = "NZ-NIC"  # a recipient with no reports of its own: it sees what decisions give it
PARTNER = "HSU-TH"
RELEASE = release_scope(SCOPE, PARTNER)
NOW = datetime(2026, 11, 1, tzinfo=UTC)

ELEMENTS = ["ACT_RECRUITMENT", "ACT_TRANSPORT", "MEANS_DECEPTION", "MEANS_DEBT_BONDAGE", "PURPOSE_FORCED_LABOUR"]
AGENCIES = ["NZ-CUSTOMS", "NZ-LABOUR", "NGO-SHAKTI", "NZ-POLICE"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return Pipeline(tmp_path_factory.mktemp("scoped"))


class Feed:
    """Drives a ScopedCorrelation the way the union stage does: a report, its links, its decision, a flush."""

    def __init__(self) -> None:
        self.state = ScopedCorrelation(PLAN, KEY, partners={PARTNER})
        self.index = KeyIndex()
        self.emitted: list[Emitted] = []

    def step(self, facts: ReportFacts, visible_to_scope: bool, visible_to_partner: bool = False) -> None:
        now = NOW + timedelta(minutes=len(self.emitted))
        self.state.accept(facts, now)
        links: list[Link] = []
        for sightings in by_partition(sightings_of(facts), 1).values():
            for sighting in sightings:
                links += self.index.add(sighting)
        self.state.add_links(links)
        self.state.decided(PARTNER, facts.report_id, visible_to_partner, None, now, SHARED)
        self.state.decided(SCOPE, facts.report_id, visible_to_scope, None, now, SHARED)
        self.emitted += self.state.flush()

    def shown_to(self, scope: str) -> list[tuple[int, int, dict[str, Any]]]:
        return [(e.seq, e.version, e.signal.__dict__) for e in self.emitted if e.scope == scope]


def accepted_facts(pipeline: Pipeline, reports: list[dict[str, Any]]) -> list[ReportFacts]:
    return [facts_from_accepted(record) for record in pipeline.accept(reports)]


def report(agency: str, elements: list[str], subjects: list[dict[str, Any]], day: int) -> dict[str, Any]:
    return make_report(
        source_agency=agency,
        observed_at=f"2026-10-{day:02d}T10:00:00Z",
        elements=elements,
        subjects=subjects,
        organisations=[],
        narrative=None,
    )


def test_a_hidden_report_that_joins_two_visible_people_changes_nothing_in_the_scope(pipeline: Pipeline) -> None:
    # Customs knows Sokha by passport, labour by name and birth date; only the RED police report
    # carries both and so says they are one person.
    visible = [
        report("NZ-CUSTOMS", ["ACT_TRANSPORT", "MEANS_DECEPTION"], [person_as_recorded(0, "passport")], 1),
        report("NZ-LABOUR", ["PURPOSE_FORCED_LABOUR"], [person_as_recorded(0, "name")], 2),
    ]
    hidden = report("NZ-POLICE", ["MEANS_DEBT_BONDAGE"], [person_as_recorded(0, "both")], 3)
    facts = accepted_facts(pipeline, [*visible, hidden])

    with_hidden, without = Feed(), Feed()
    for fact, shown in zip(facts, (True, True, False), strict=True):
        with_hidden.step(fact, shown)
    for fact in facts[:2]:
        without.step(fact, True)

    # The hub sees all three: one person across agencies, act + means + purpose: IR-1.
    hub = {s["requirement_id"] for _, _, s in with_hidden.shown_to(HUB_SCOPE) if s["status"] == "open"}
    assert "IR-1" in hub
    # NZ-NIC sees two reports it cannot join: no IR-1, and exactly what it would be shown without the
    # RED report existing at all.
    assert with_hidden.shown_to(SCOPE) == without.shown_to(SCOPE)
    assert not any(s["requirement_id"] == "IR-1" for _, _, s in with_hidden.shown_to(SCOPE))


def test_scopes_name_the_same_signal_differently_and_never_by_a_recomputable_id(pipeline: Pipeline) -> None:
    reports = [
        report("NZ-CUSTOMS", ["ACT_TRANSPORT", "MEANS_DECEPTION"], [person_as_recorded(1, "both")], 1),
        report("NZ-LABOUR", ["PURPOSE_FORCED_LABOUR"], [person_as_recorded(1, "both")], 2),
    ]
    feed = Feed()
    for fact in accepted_facts(pipeline, reports):
        feed.step(fact, True)
    [hub] = [s for _, _, s in feed.shown_to(HUB_SCOPE) if s["requirement_id"] == "IR-1"]
    [nic] = [s for _, _, s in feed.shown_to(SCOPE) if s["requirement_id"] == "IR-1"]
    assert hub["report_ids"] == nic["report_ids"]
    assert hub["signal_id"] != nic["signal_id"] and hub["entity"] != nic["entity"]
    # Not the unkeyed derivation anyone could compute from a report id.
    from domain.correlate import pseudonym, signal_id

    entity_key = f"{min(nic['report_ids'])}#0"
    assert nic["signal_id"] != signal_id("IR-1", entity_key) and nic["entity"] != pseudonym(entity_key)


def test_a_report_whose_retention_is_over_leaves_the_recipients_scope_only(pipeline: Pipeline) -> None:
    reports = [
        report("NZ-CUSTOMS", ["ACT_TRANSPORT", "MEANS_DECEPTION"], [person_as_recorded(2, "both")], 1),
        report("NZ-LABOUR", ["PURPOSE_FORCED_LABOUR"], [person_as_recorded(2, "both")], 2),
    ]
    first, second = accepted_facts(pipeline, reports)
    state = ScopedCorrelation(PLAN, KEY)
    index = KeyIndex()
    for fact, until in ((first, None), (second, NOW + timedelta(days=1))):
        state.accept(fact, NOW)
        state.add_links([link for s in sightings_of(fact) for link in index.add(s)])
        state.decided(SCOPE, fact.report_id, True, until, NOW, SHARED)
    emitted = state.flush()
    assert any(e.scope == SCOPE and e.signal.requirement_id == "IR-1" for e in emitted)
    state.expire(NOW + timedelta(days=2))
    after = state.flush()
    closed = [e for e in after if e.scope == SCOPE and e.signal.requirement_id == "IR-1"]
    assert [e.signal.status for e in closed] == ["closed"]
    assert not any(e.scope in (HUB_SCOPE, "NZ-LABOUR") for e in after)  # the agency and the hub keep it


shown_as = st.sampled_from(RECORDED_AS)
report_spec = st.tuples(
    st.sampled_from(AGENCIES),
    st.lists(st.sampled_from(ELEMENTS), min_size=1, max_size=3, unique=True),
    st.lists(st.tuples(st.integers(0, len(PEOPLE) - 1), shown_as), min_size=1, max_size=2),
    st.booleans(),  # visible to the scope
    st.booleans(),  # visible to the partner
    st.integers(1, 28),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(report_spec, min_size=2, max_size=8))
def test_no_mix_of_hidden_reports_changes_what_a_scope_is_shown(pipeline: Pipeline, specs: list[Any]) -> None:
    """Three runs: every report; only those the scope may see; only those the partner may see. What the
    scope, the partner and their release scope are shown never depends on what the observer may not see."""
    reports = [
        report(agency, elements, [person_as_recorded(p, shown) for p, shown in people], day)
        for agency, elements, people, _, _, day in specs
    ]
    flags = [(spec[3], spec[4]) for spec in specs]
    facts = accepted_facts(pipeline, reports)
    everything, scope_only, partner_only = Feed(), Feed(), Feed()
    for fact, (to_scope, to_partner) in zip(facts, flags, strict=True):
        everything.step(fact, to_scope, to_partner)
        if to_scope:
            scope_only.step(fact, True, to_partner)
        if to_partner:
            partner_only.step(fact, to_scope, True)
    assert everything.shown_to(SCOPE) == scope_only.shown_to(SCOPE)
    assert everything.shown_to(PARTNER) == partner_only.shown_to(PARTNER)
    assert everything.shown_to(RELEASE) == scope_only.shown_to(RELEASE) == partner_only.shown_to(RELEASE)


def test_a_release_scope_holds_exactly_what_both_sides_may_see(pipeline: Pipeline) -> None:
    reports = [
        report("NZ-CUSTOMS", ["ACT_TRANSPORT", "MEANS_DECEPTION"], [person_as_recorded(3, "both")], 1),
        report("NZ-LABOUR", ["PURPOSE_FORCED_LABOUR"], [person_as_recorded(3, "both")], 2),
        report("NZ-IMMIGRATION", ["PURPOSE_FORCED_LABOUR"], [person_as_recorded(3, "both")], 3),
    ]
    feed = Feed()
    for fact, flags in zip(accepted_facts(pipeline, reports), ((True, True), (True, True), (True, False)), strict=True):
        feed.step(fact, *flags)
    held = feed.state.scopes[RELEASE].held
    assert set(held) == {r["report_id"] for r in reports[:2]}
    [signal] = [s for _, _, s in feed.shown_to(RELEASE) if s["requirement_id"] == "IR-1" and s["status"] == "open"]
    assert set(signal["report_ids"]) == set(held)


def labour_rules(record: dict[str, Any]) -> dict[str, str]:
    """The rules NZ-LABOUR's decision gives each field of a report, by the shipped agreements."""
    from policies.engine import decide
    from policies.loader import load_directory
    from policies.model import AgreementSet, LoadedAgreement

    agreements = AgreementSet([LoadedAgreement(a, datetime(2000, 1, 1, tzinfo=UTC)) for a in load_directory()])
    decision = decide(record, "NZ-LABOUR", agreements, record["accepted_at"])
    assert decision.allowed, decision.explanation
    return {f.path: f.rule for f in decision.fields}


def shown_to_labour(records: list[dict[str, Any]], rules: dict[str, str]) -> list[Any]:
    """Correlate the accepted records (their links included), with NZ-LABOUR allowed the first under
    `rules`; what every scope is shown."""
    state = ScopedCorrelation(PLAN, KEY)
    index = KeyIndex()
    for record in records:
        facts = facts_from_accepted(record)
        state.accept(facts, NOW)
        state.add_links([link for s in sightings_of(facts) for link in index.add(s)])
    state.decided("NZ-LABOUR", records[0]["report_id"], True, None, NOW, rules)
    return state.flush()


def test_a_field_the_scope_may_not_see_links_nothing_there(pipeline: Pipeline) -> None:
    """NZ-LABOUR may see a police hotline tip, but not its victim's passport. Probing with a report of its
    own that names a guessed passport joins nothing in its scope, right guess or wrong: only the hub,
    which sees every field, links them."""
    victim = {"role": "SUSPECTED_VICTIM", "nationality": "TH", "identifiers": []}

    def police(passport: str) -> dict[str, Any]:
        return make_report(
            source_agency="NZ-POLICE",
            indicator_type="HOTLINE_TIP",
            purpose="INVESTIGATION",
            observed_at="2026-10-05T10:00:00Z",
            elements=["ACT_RECRUITMENT", "MEANS_DEBT_BONDAGE"],
            subjects=[{**victim, "identifiers": [{"kind": "PASSPORT", "value": passport, "issuer": "TH"}]}],
            organisations=[],
            narrative=None,
        )

    probe = make_report(
        source_agency="NZ-LABOUR",
        indicator_type="LABOUR_INSPECTION",
        observed_at="2026-10-06T10:00:00Z",
        elements=["PURPOSE_FORCED_LABOUR"],
        subjects=[{**victim, "identifiers": [{"kind": "PASSPORT", "value": "AA1234567", "issuer": "TH"}]}],
        organisations=[],
        narrative=None,
    )
    shown: dict[str, list[Any]] = {}
    for guess in ("AA1234567", "ZZ7654321"):  # the right passport, and another
        records = pipeline.accept([police(guess), probe])
        rules = labour_rules(records[0])
        assert rules["subjects[0].identifiers[0].value"] == "drop"
        emitted = shown_to_labour(records, rules)
        shown[guess] = [
            (e.seq, e.signal.requirement_id, len(e.signal.report_ids)) for e in emitted if e.scope == "NZ-LABOUR"
        ]
        hub_joined = any(len(e.signal.report_ids) == 2 for e in emitted if e.scope == HUB_SCOPE)
        assert hub_joined == (guess == "AA1234567")
    assert shown["AA1234567"] == shown["ZZ7654321"] == []


def test_a_scope_shown_a_passport_number_but_not_its_issuer_cannot_probe_for_the_issuer(pipeline: Pipeline) -> None:
    """A decision that shares a passport's number but withholds its issuer: the linkage token is keyed over
    both, so linking on it would answer "which issuer?". NZ-LABOUR probes with the known number under three
    guessed issuers: nothing joins in its scope for any guess, while the hub links the right one."""
    victim = {"role": "SUSPECTED_VICTIM", "nationality": "TH"}

    def with_passport(agency: str, issuer: str, **fields: Any) -> dict[str, Any]:
        passport = {"kind": "PASSPORT", "value": "AA1234567", "issuer": issuer}
        return make_report(
            source_agency=agency, subjects=[{**victim, "identifiers": [passport]}], organisations=[], **fields
        )

    police = with_passport(
        "NZ-POLICE",
        "MM",
        indicator_type="HOTLINE_TIP",
        purpose="INVESTIGATION",
        observed_at="2026-10-05T10:00:00Z",
        elements=["ACT_RECRUITMENT", "MEANS_DEBT_BONDAGE"],
        narrative=None,
    )
    hub_joined, scope_joined = [], []
    for guess in ("TH", "MM", "KH"):
        probe = with_passport(
            "NZ-LABOUR",
            guess,
            indicator_type="LABOUR_INSPECTION",
            observed_at="2026-10-06T10:00:00Z",
            elements=["PURPOSE_FORCED_LABOUR"],
            narrative=None,
        )
        records = pipeline.accept([police, probe])
        rules = {**labour_rules(records[0]), "subjects[0].identifiers[0].value": "share"}
        rules["subjects[0].identifiers[0].issuer"] = "drop"
        emitted = shown_to_labour(records, rules)
        if any(len(e.signal.report_ids) == 2 for e in emitted if e.scope == HUB_SCOPE):
            hub_joined.append(guess)
        if any(len(e.signal.report_ids) == 2 for e in emitted if e.scope == "NZ-LABOUR"):
            scope_joined.append(guess)
    assert hub_joined == ["MM"] and scope_joined == []


def test_a_later_decision_with_a_shorter_retention_takes_effect_as_a_restore_would_read_it(pipeline: Pipeline) -> None:
    reports = [
        report("NZ-CUSTOMS", ["ACT_TRANSPORT", "MEANS_DECEPTION"], [person_as_recorded(0, "both")], 1),
        report("NZ-LABOUR", ["PURPOSE_FORCED_LABOUR"], [person_as_recorded(0, "both")], 2),
    ]
    first, second = accepted_facts(pipeline, reports)
    state = ScopedCorrelation(PLAN, KEY)
    for fact in (first, second):
        state.accept(fact, NOW)
        state.decided(SCOPE, fact.report_id, True, NOW + timedelta(days=365), NOW, SHARED)
    assert any(e.scope == SCOPE and e.signal.status == "open" for e in state.flush())
    state.decided(SCOPE, second.report_id, True, NOW + timedelta(days=1), NOW, SHARED)  # the agreement changed
    state.expire(NOW + timedelta(days=2))
    closed = [e.signal.status for e in state.flush() if e.scope == SCOPE]
    assert closed == ["closed"]
