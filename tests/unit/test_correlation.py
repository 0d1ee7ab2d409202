"""Every default requirement of the Collection Plan, with the near-misses that must NOT raise a signal."""

from __future__ import annotations

import random
from typing import Any

import pytest

from domain.correlate import Correlator, SignalBook, evaluate_against_truth
from producers.simulate import simulate
from tests.correlation_kit import PLAN, Pipeline, correlate_partitioned, state_of
from tests.factories import make_report


@pytest.fixture(scope="module", params=["single", "partitioned"])
def pipeline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """Every requirement test runs on both the single-process correlator and the partitioned design."""
    return Pipeline(tmp_path_factory.mktemp("correlation"), mode=request.param)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return Pipeline(tmp_path_factory.mktemp("one-process"))


def person(
    name: str, dob: str | None, *ids: tuple[str, str], role: str = "SUSPECTED_VICTIM", nationality: str = "KH"
) -> dict[str, Any]:
    subject: dict[str, Any] = {
        "role": role,
        "name": name,
        "nationality": nationality,
        "identifiers": [
            {"kind": k, "value": v, **({"issuer": nationality} if k == "PASSPORT" else {})} for k, v in ids
        ],
    }
    if dob:
        subject["date_of_birth"] = dob
    return subject


def report(
    agency: str,
    kind: str,
    when: str,
    elements: list[str],
    subjects: list[dict[str, Any]],
    organisations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return make_report(
        source_agency=agency,
        indicator_type=kind,
        observed_at=f"{when}T10:00:00Z",
        elements=elements,
        subjects=subjects,
        organisations=organisations or [],
        narrative=None,
    )


def signals(pipeline: Pipeline, reports: list[dict[str, Any]], requirement: str) -> list[Any]:
    correlator = pipeline.correlate(pipeline.accept(reports))
    return [s for s in correlator.evaluate().values() if s.requirement_id == requirement]


SOKHA = ("Sokha Chan", "1999-04-02")


def test_ir1_links_one_person_across_agencies_despite_spelling_and_formats(pipeline: Pipeline) -> None:
    reports = [
        report(
            "NZ-CUSTOMS",
            "BORDER_CROSSING",
            "2026-01-05",
            ["ACT_TRANSPORT"],
            [person(*SOKHA, ("PASSPORT", "N01234567"))],
        ),
        report(
            "NZ-LABOUR", "LABOUR_INSPECTION", "2026-03-01", ["MEANS_DEBT_BONDAGE"], [person("Chan Sokhaa", SOKHA[1])]
        ),
        report(
            "NGO-SHAKTI",
            "NGO_REFERRAL",
            "2026-04-11",
            ["PURPOSE_FORCED_LABOUR"],
            [person("Sokkha Chan", None, ("PHONE", "+855 12 345 678"))],
        ),
        report("NZ-POLICE", "HOTLINE_TIP", "2026-05-01", [], [person("Sokha Chan", SOKHA[1], ("PHONE", "012345678"))]),
    ]
    [signal] = signals(pipeline, reports, "IR-1")
    assert sorted(signal.report_ids) == sorted(r["report_id"] for r in reports)
    assert signal.agencies == ("NGO-SHAKTI", "NZ-CUSTOMS", "NZ-LABOUR", "NZ-POLICE")
    assert signal.act_means_purpose == ("ACT", "MEANS", "PURPOSE") and 0 < signal.score <= 1
    assert signal.entity.startswith("ent-") and "lk1." not in signal.entity


def test_ir1_near_miss_a_namesake_with_another_date_of_birth(pipeline: Pipeline) -> None:
    reports = [
        report("NZ-CUSTOMS", "BORDER_CROSSING", "2026-01-05", ["ACT_TRANSPORT", "MEANS_DECEPTION"], [person(*SOKHA)]),
        report(
            "NZ-LABOUR",
            "LABOUR_INSPECTION",
            "2026-03-01",
            ["PURPOSE_FORCED_LABOUR"],
            [person("Sokha Chan", "1987-11-30")],
        ),
    ]
    assert signals(pipeline, reports, "IR-1") == []


def test_ir1_near_miss_two_reports_from_the_same_agency_only(pipeline: Pipeline) -> None:
    reports = [
        report("NZ-LABOUR", "LABOUR_INSPECTION", "2026-01-05", ["ACT_RECRUITMENT", "MEANS_FORCE"], [person(*SOKHA)]),
        report("NZ-LABOUR", "LABOUR_INSPECTION", "2026-03-01", ["PURPOSE_FORCED_LABOUR"], [person(*SOKHA)]),
    ]
    assert signals(pipeline, reports, "IR-1") == []


def test_ir1_an_adult_needs_means_a_child_does_not(pipeline: Pipeline) -> None:
    adult = [
        report("NZ-CUSTOMS", "BORDER_CROSSING", "2026-01-05", ["ACT_TRANSPORT"], [person(*SOKHA)]),
        report("NGO-SHAKTI", "NGO_REFERRAL", "2026-02-01", ["PURPOSE_SEXUAL_EXPLOITATION"], [person(*SOKHA)]),
    ]
    assert signals(pipeline, adult, "IR-1") == []
    child = [
        report("NZ-CUSTOMS", "BORDER_CROSSING", "2026-01-05", ["ACT_TRANSPORT"], [person("Dara Kim", "2012-06-01")]),
        report(
            "NGO-SHAKTI",
            "NGO_REFERRAL",
            "2026-02-01",
            ["PURPOSE_SEXUAL_EXPLOITATION"],
            [person("Dara Kim", "2012-06-01")],
        ),
    ]
    [signal] = signals(pipeline, child, "IR-1")
    assert signal.minor_involved and signal.act_means_purpose == ("ACT", "PURPOSE")


def test_ir1_near_miss_beyond_the_365_day_window(pipeline: Pipeline) -> None:
    reports = [
        report("NZ-CUSTOMS", "BORDER_CROSSING", "2024-01-05", ["ACT_TRANSPORT", "MEANS_FRAUD"], [person(*SOKHA)]),
        report("NZ-LABOUR", "LABOUR_INSPECTION", "2025-06-01", ["PURPOSE_FORCED_LABOUR"], [person(*SOKHA)]),
    ]
    assert signals(pipeline, reports, "IR-1") == []


def controller_case(victims: int) -> list[dict[str, Any]]:
    names = [
        ("Nimal Perera", "1995-01-01"),
        ("Kumari Silva", "1998-02-02"),
        ("Ruwan Bandara", "2000-03-03"),
        ("Dilani Herath", "1993-04-04"),
    ]
    agencies = [
        ("NGO-SHAKTI", "NGO_REFERRAL"),
        ("NZ-POLICE", "HOTLINE_TIP"),
        ("NZ-LABOUR", "LABOUR_INSPECTION"),
        ("NZ-CUSTOMS", "BORDER_CROSSING"),
    ]
    return [
        report(
            agencies[i][0],
            agencies[i][1],
            f"2026-0{i + 1}-10",
            ["MEANS_THREAT", "PURPOSE_FORCED_LABOUR"],
            [person(*names[i], ("PHONE", "+94 71 555 0101"), nationality="LK")],
        )
        for i in range(victims)
    ]


def test_ir4_a_phone_shared_by_three_people_is_a_controller_not_a_link(pipeline: Pipeline) -> None:
    correlator = pipeline.correlate(pipeline.accept(controller_case(3)))
    [signal] = [s for s in correlator.evaluate().values() if s.requirement_id == "IR-4"]
    assert len(signal.report_ids) == 3
    assert len(correlator.entity_members) == 3  # the victims stay three people
    assert [s for s in correlator.evaluate().values() if s.requirement_id == "IR-1"] == []


def test_ir4_near_miss_victims_sharing_only_their_controllers_phone_are_not_linked(pipeline: Pipeline) -> None:
    correlator = pipeline.correlate(pipeline.accept(controller_case(2)))
    assert len(correlator.entity_members) == 2  # different names and birth dates: the phone links nobody
    assert [s for s in correlator.evaluate().values() if s.requirement_id in ("IR-1", "IR-4")] == []


EMPLOYER = {"role": "EMPLOYER", "name": "Harbour Seafoods Ltd", "registration": "NZBN-9429000000001", "country": "NZ"}


def test_ir2_an_employer_linked_to_three_victims(pipeline: Pipeline) -> None:
    people = [("Siti Wijaya", "1996-05-05"), ("Budi Santoso", "1990-06-06"), ("Dewi Lestari", "1999-07-07")]
    reports = [
        report(
            "NZ-LABOUR",
            "LABOUR_INSPECTION",
            f"2026-0{i + 1}-01",
            ["MEANS_DEBT_BONDAGE"],
            [person(*p, nationality="ID")],
            [EMPLOYER],
        )
        for i, p in enumerate(people)
    ]
    [signal] = signals(pipeline, reports, "IR-2")
    assert len(signal.report_ids) == 3
    assert signals(pipeline, reports[:2], "IR-2") == []  # two victims: not yet


def test_ir3_a_lost_passport_later_used_at_the_border(pipeline: Pipeline) -> None:
    lost = report("NZ-DIA", "LOST_STOLEN_DOCUMENT", "2026-02-01", [], [person(*SOKHA, ("PASSPORT", "N55554444"))])
    used = report(
        "NZ-CUSTOMS",
        "BORDER_CROSSING",
        "2026-05-01",
        ["ACT_TRANSPORT"],
        [person("Mao Sina", "1990-01-01", ("PASSPORT", "N5555-4444"))],
    )
    [signal] = signals(pipeline, [lost, used], "IR-3")
    assert set(signal.report_ids) == {lost["report_id"], used["report_id"]}
    earlier = report(
        "NZ-CUSTOMS", "BORDER_CROSSING", "2026-01-01", ["ACT_TRANSPORT"], [person(*SOKHA, ("PASSPORT", "N55554444"))]
    )
    assert signals(pipeline, [lost, earlier], "IR-3") == []  # used before it was lost: no signal


def test_ir5_debt_bondage_at_an_employer_that_sponsors_flagged_visas(pipeline: Pipeline) -> None:
    inspection = report(
        "NZ-LABOUR", "LABOUR_INSPECTION", "2026-03-01", ["MEANS_DEBT_BONDAGE"], [person(*SOKHA)], [EMPLOYER]
    )
    visa = report(
        "NZ-IMMIGRATION",
        "VISA_APPLICATION_FLAG",
        "2026-04-01",
        ["ACT_RECRUITMENT"],
        [person("Vannak Sok", "2001-01-01")],
        [EMPLOYER],
    )
    assert len(signals(pipeline, [inspection, visa], "IR-5")) == 1
    no_bondage = report("NZ-LABOUR", "LABOUR_INSPECTION", "2026-03-01", ["MEANS_THREAT"], [person(*SOKHA)], [EMPLOYER])
    assert signals(pipeline, [no_bondage, visa], "IR-5") == []


def test_ir6_recruitment_into_forced_criminality_seen_by_two_agencies(pipeline: Pipeline) -> None:
    reports = [
        report("NZ-IMMIGRATION", "VISA_APPLICATION_FLAG", "2026-01-01", ["ACT_RECRUITMENT"], [person(*SOKHA)]),
        report(
            "NGO-SHAKTI",
            "NGO_REFERRAL",
            "2026-03-01",
            ["PURPOSE_FORCED_CRIMINALITY", "MEANS_DECEPTION"],
            [person(*SOKHA)],
        ),
    ]
    assert len(signals(pipeline, reports, "IR-6")) == 1
    one_agency = [
        report(
            "NGO-SHAKTI",
            "NGO_REFERRAL",
            "2026-03-01",
            ["ACT_RECRUITMENT", "PURPOSE_FORCED_CRIMINALITY"],
            [person(*SOKHA)],
        )
    ]
    assert signals(pipeline, one_agency, "IR-6") == []


def test_the_plan_ships_six_requirements_starting_with_ir1() -> None:
    assert [r.id for r in PLAN] == ["IR-1", "IR-2", "IR-3", "IR-4", "IR-5", "IR-6"]
    assert PLAN[0].legal_definition and PLAN[0].min_agencies == 2 and PLAN[0].window_days == 365


def test_final_signals_do_not_depend_on_arrival_order_or_redelivery(pipeline: Pipeline) -> None:
    accepted = pipeline.accept(simulate(40, seed=3).reports)
    in_order = pipeline.correlate(accepted).evaluate()
    shuffled = accepted + accepted[:15]  # re-delivered copies too
    random.Random(1).shuffle(shuffled)
    assert pipeline.correlate(shuffled).evaluate() == in_order


def test_ir1_precision_and_recall_on_a_fixed_seed_simulation(pipeline: Pipeline) -> None:
    simulation = simulate(400, seed=7)
    correlator = pipeline.correlate(pipeline.accept(simulation.reports))
    scores = evaluate_against_truth(list(correlator.evaluate().values()), simulation.truth()["requirements"])
    # Every requirement of the plan is simulated with its truth (networks, controllers, lost passports
    # presented by someone else, scam compounds) and scored.
    assert sorted(scores) == ["IR-1", "IR-2", "IR-3", "IR-4", "IR-5", "IR-6"]
    for requirement, score in scores.items():
        assert score["truth"] >= 9 and score["precision"] >= 0.9 and score["recall"] >= 0.9, (requirement, scores)
    # The cases one agency wrote in the victim's own script (Thai, Khmer, Burmese, Cyrillic) or with
    # Vietnamese diacritics, and another as the passport does: found as well as the rest (encoding 2).
    native = {
        r["report_id"] for r in simulation.reports if any(not (s.get("name") or "").isascii() for s in r["subjects"])
    }
    crossing = [case for case in simulation.truth()["requirements"]["IR-1"] if native & set(case["report_ids"])]
    # 0.8, not 0.9: half of these reports are also hand-written with a date of birth swapped, mistyped or
    # missing, and a name in another script with a degraded date is past what the hub links on (the bench
    # scores 1,000 cases: docs/correlation.md "Measured").
    assert len(crossing) >= 15
    across = evaluate_against_truth(list(correlator.evaluate().values()), {"IR-1": crossing})
    assert across["IR-1"]["recall"] >= 0.8, across


def test_merging_entities_re_emits_the_absorbed_signal_as_merged(pipeline: Pipeline) -> None:
    # Two halves of one person, each an IR-1 signal, until a passport joins them.
    a = [
        report(
            "NZ-CUSTOMS",
            "BORDER_CROSSING",
            "2026-01-05",
            ["ACT_TRANSPORT", "MEANS_FRAUD"],
            [person("Sok Dara", None, ("PASSPORT", "N1111111"))],
        ),
        report(
            "NZ-LABOUR",
            "LABOUR_INSPECTION",
            "2026-02-05",
            ["PURPOSE_FORCED_LABOUR"],
            [person("Sok Dara", None, ("PASSPORT", "N1111111"))],
        ),
    ]
    b = [
        report(
            "NGO-SHAKTI",
            "NGO_REFERRAL",
            "2026-03-05",
            ["ACT_RECRUITMENT", "MEANS_THREAT"],
            [person("Dara Sokh", None, ("PASSPORT", "N2222222"))],
        ),
        report(
            "NZ-POLICE",
            "HOTLINE_TIP",
            "2026-04-05",
            ["PURPOSE_FORCED_LABOUR"],
            [person("Dara Sokh", None, ("PASSPORT", "N2222222"))],
        ),
    ]
    bridge = [
        report(
            "NZ-DIA",
            "LOST_STOLEN_DOCUMENT",
            "2026-05-05",
            [],
            [person("Sok Dara", None, ("PASSPORT", "N1111111"), ("PASSPORT", "N2222222"))],
        )
    ]
    accepted = pipeline.accept(a + b + bridge)
    correlator, book = Correlator(PLAN), SignalBook()
    from domain.facts import facts_from_accepted

    emitted = []
    for record in accepted:
        facts = facts_from_accepted(record)
        touched = correlator.add(facts)
        keys = correlator.affected(facts.report_id, touched)
        emitted += book.apply(correlator.evaluate_keys(keys), correlator.absorbed)
    statuses = [(v, s.status) for v, s in emitted if s.requirement_id == "IR-1"]
    assert ("open" in {s for _, s in statuses}) and any(s == "merged" for _, s in statuses)
    merged = next(s for _, s in emitted if s.status == "merged")
    final = {s.signal_id: (v, s) for v, s in emitted}
    assert merged.merged_into in final and final[merged.merged_into][1].status == "open"
    assert len(final[merged.merged_into][1].report_ids) == 5


def test_retracting_the_report_with_the_smallest_member_continues_the_signal_under_a_new_id(pipeline: Pipeline) -> None:
    from domain.facts import facts_from_accepted

    ids = [
        "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-000000000002",
        "00000000-0000-4000-8000-000000000003",
    ]
    reports = [
        report("NZ-CUSTOMS", "BORDER_CROSSING", "2026-01-05", ["ACT_TRANSPORT", "MEANS_FRAUD"], [person(*SOKHA)]),
        report(
            "NZ-LABOUR",
            "LABOUR_INSPECTION",
            "2026-02-05",
            ["PURPOSE_FORCED_LABOUR", "ACT_RECRUITMENT"],
            [person(*SOKHA)],
        ),
        report("NGO-SHAKTI", "NGO_REFERRAL", "2026-03-05", ["MEANS_THREAT"], [person(*SOKHA)]),
    ]
    for r, report_id in zip(reports, ids, strict=True):
        r["report_id"] = report_id
    correlator, book = Correlator(PLAN), SignalBook()
    for record in pipeline.accept(reports):
        facts = facts_from_accepted(record)
        book.apply(
            correlator.evaluate_keys(correlator.affected(facts.report_id, correlator.add(facts))), correlator.absorbed
        )
    [(_, first)] = [(v, s) for v, s in book.latest() if s.requirement_id == "IR-1"]
    before = set(book.by_entity)
    correlator.retract([ids[0]])  # the report holding the entity's smallest member
    results = {key: None for key in before} | correlator.evaluate()
    emitted = book.apply(results, correlator.absorbed)
    old = next(s for _, s in emitted if s.signal_id == first.signal_id)
    assert old.status == "merged" and old.merged_into is not None
    new = next(s for _, s in emitted if s.signal_id == old.merged_into)
    assert new.status == "open" and sorted(new.report_ids) == ids[1:]


@pytest.mark.parametrize(("partitions", "seed"), [(1, 0), (4, 1), (7, 2)])
def test_the_partitioned_design_finds_the_same_entities_and_signals_as_one_process(
    one_process: Pipeline, partitions: int, seed: int
) -> None:
    pipeline = one_process
    accepted = pipeline.accept(simulate(120, seed=11).reports)
    single = pipeline.correlate(accepted)
    split = correlate_partitioned(accepted, partitions, seed)
    assert split.entity_members == single.entity_members
    assert split.evaluate() == single.evaluate()
    assert any(len(members) > 1 for members in single.entity_members.values())  # the data links people
    # Retraction and erasure rebuild from the links already received, with the same result.
    retract = sorted(single.reports)[::9]
    erase = sorted({o.subject_key_id for o in single.occurrences.values()})[::7]
    for correlator in (single, split):
        correlator.retract(retract)
        correlator.erase(erase)
    assert split.entity_members == single.entity_members
    assert split.evaluate() == single.evaluate()


def test_a_link_is_made_once_whichever_occurrence_comes_second_and_never_to_an_erased_person() -> None:
    from domain.linking import KeyIndex, Sighting

    def seen(occ: str, subject: str) -> Sighting:
        return Sighting("doc:passport-token", occ, subject, None, None, ())

    a, b, c = seen("r1#0", "s1"), seen("r2#0", "s2"), seen("r3#0", "s3")
    forwards, backwards = KeyIndex(), KeyIndex()
    made = [link for s in (a, b, a, b) for link in forwards.add(s)]  # re-delivered copies too
    assert [(x.a, x.b, x.basis) for x in made] == [("r1#0", "r2#0", "document")]
    assert [link for s in (b, a) for link in backwards.add(s)] == made
    forwards.erase(["s2"])
    assert [(x.a, x.b) for x in forwards.add(c)] == [("r1#0", "r3#0")]
    assert forwards.add(seen("r4#0", "s2")) == []


def test_coverage_kept_as_reports_and_signals_arrive_equals_a_full_recount(one_process: Pipeline) -> None:
    """The union stage keeps coverage incrementally; a recount from every report and signal must agree,
    through merges, a retraction and an erasure."""
    from domain.facts import facts_from_accepted

    def recount(correlator: Correlator, book: SignalBook) -> dict[str, dict[str, Any]]:
        latest = [signal for _, signal in book.versions.values() if signal.status == "open"]
        out = {}
        for requirement in correlator.plan:
            considered = [r for r in correlator.reports.values() if correlator._considers(requirement, r)]
            raised = [s for s in latest if s.requirement_id == requirement.id]
            out[requirement.id] = {
                "requirement_id": requirement.id,
                "question": requirement.question,
                "priority": requirement.priority,
                "open_signals": len(raised),
                "reports_considered": len(considered),
                "reports_in_signals": len({r for s in raised for r in s.report_ids}),
                "agencies_contributing": sorted({a for s in raised for a in s.agencies}),
                "agencies_reporting": sorted({r.agency for r in considered}),
            }
        return out

    accepted = one_process.accept(simulate(40, seed=29).reports)
    correlator, book = Correlator(PLAN), SignalBook()
    for record in accepted:
        facts = facts_from_accepted(record)
        touched = correlator.add(facts)
        book.apply(correlator.evaluate_keys(correlator.affected(facts.report_id, touched)), correlator.absorbed)
    assert correlator.coverage(book) == recount(correlator, book)
    assert correlator.coverage(book)["IR-1"]["open_signals"] > 5

    # Erase a person of one open signal and withdraw the reports of another: the keys each names re-evaluated.
    ir1 = [s for _, s in book.versions.values() if s.requirement_id == "IR-1" and s.status == "open"]
    erased = {p.subject_key_id for p in correlator.reports[ir1[1].report_ids[0]].people}
    book.apply(correlator.evaluate_keys(correlator.erase(erased)), correlator.absorbed)
    book.apply(correlator.evaluate_keys(correlator.retract(ir1[0].report_ids)), correlator.absorbed)
    assert correlator.coverage(book) == recount(correlator, book)
    everything: dict[tuple[str, str], Any] = dict.fromkeys(book.by_entity)
    assert book.apply({**everything, **correlator.evaluate()}, {}) == []  # nothing a full evaluation would change
    assert correlator.coverage(book)["IR-1"]["open_signals"] < len(ir1)


@pytest.mark.parametrize("seed", range(6))
def test_erasing_people_and_retracting_reports_leaves_what_adding_only_the_rest_builds(
    one_process: Pipeline, seed: int
) -> None:
    """Removal touches only the clusters and entities that held what left (no rebuild from every report),
    and must end where a correlator that never saw it ends: the same clusters, entities, indexes, counts
    and signals. Its signal book, kept by the keys each step names, is what a full evaluation gives."""
    from domain.facts import facts_from_accepted

    rng = random.Random(seed)
    pool = [facts_from_accepted(r) for r in one_process.accept(simulate(60, seed=100 + seed).reports)]
    correlator, book = Correlator(PLAN), SignalBook()
    added: list[Any] = []
    removals = 0
    for facts in pool:
        keys = correlator.affected(facts.report_id, correlator.add(facts))
        book.apply(correlator.evaluate_keys(keys), correlator.absorbed)
        added.append(facts)
        if rng.random() < 0.15:
            if rng.random() < 0.5:
                keys = correlator.retract(rng.sample([f.report_id for f in added], k=min(3, len(added))))
            else:
                people = sorted({p.subject_key_id for p in correlator.occurrences.values()})
                keys = correlator.erase(rng.sample(people, k=min(2, len(people))))
            removals += 1
            book.apply(correlator.evaluate_keys(keys), correlator.absorbed)
            everything: dict[tuple[str, str], Any] = dict.fromkeys(book.by_entity)
            assert book.apply({**everything, **correlator.evaluate()}, {}) == [], "a key the removal left out"
    assert removals >= 3

    fresh = Correlator(PLAN)
    fresh.erased, fresh.retracted = set(correlator.erased), set(correlator.retracted)
    for facts in pool:
        fresh.add(facts)
    assert state_of(correlator) == state_of(fresh)
    assert any(len(members) > 1 for members in correlator.entity_members.values())  # the data links people


def test_a_contact_that_stops_being_a_controllers_links_the_people_left_on_it(one_process: Pipeline) -> None:
    """Five reports of one name, no birth date, one phone: five clusters on a phone is a controller's, so
    nobody is linked by it. Withdraw two: three clusters are under the limit and, not conflicting, are one
    person now, as if the two had never come."""
    from domain.facts import facts_from_accepted

    phone = ("PHONE", "+855 12 345 678")
    reports = [
        report(
            "NZ-POLICE", "HOTLINE_TIP", f"2026-0{month}-05", ["ACT_RECRUITMENT"], [person("Sokha Chan", None, phone)]
        )
        for month in range(1, 6)
    ]
    pool = [facts_from_accepted(r) for r in one_process.accept(reports)]
    correlator = Correlator(PLAN)
    for facts in pool:
        correlator.add(facts)
    assert len(correlator.entity_members) == 5
    keys = correlator.retract([pool[0].report_id, pool[3].report_id])
    assert len(correlator.entity_members) == 1
    assert {o.occ_id for f in pool for o in f.people if f.report_id not in correlator.retracted} <= set().union(
        *correlator.entity_members.values()
    )
    assert set(correlator.entity_members) <= keys["person"]
    fresh = Correlator(PLAN)
    fresh.retracted = set(correlator.retracted)
    for facts in pool:
        fresh.add(facts)
    assert state_of(correlator) == state_of(fresh)
