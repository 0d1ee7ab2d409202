"""Correlation quality at scale and cost per report as known entities grow (make bench)."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.correlate import Correlator, evaluate_against_truth
from domain.facts import PersonOccurrence, ReportFacts
from domain.linking import KeyIndex, sightings_of
from producers.simulate import simulate
from tests.correlation_kit import PLAN, Pipeline
from tests.factories import make_report


def test_ir1_quality_on_2000_simulated_cases_seed_7(tmp_path: Path) -> None:
    """The issue's bar: IR-1 precision and recall >= 0.95 on simulate --cases 2000 --seed 7 (with noise).
    Reported, met or not; asserted not to fall back (0.959 / 0.912 on 2026-12-06: recall not met)."""
    simulation = simulate(2000, seed=7)
    pipeline = Pipeline(tmp_path)
    correlator = pipeline.correlate(pipeline.accept(simulation.reports))
    scores = evaluate_against_truth(list(correlator.evaluate().values()), simulation.truth()["requirements"])
    met = scores["IR-1"]["precision"] >= 0.95 and scores["IR-1"]["recall"] >= 0.95
    print("\nIR-1 on simulate --cases 2000 --seed 7:", json.dumps(scores["IR-1"]), "bar met" if met else "bar NOT met")
    assert scores["IR-1"]["precision"] >= 0.95 and scores["IR-1"]["recall"] >= 0.9, scores


def synthetic_report(rng: random.Random, index: int, t0: datetime) -> ReportFacts:
    """A report about one person with realistic collision rates: birth dates drawn from a fixed span of
    about 70 years (so they collide more as the population grows, as real ones do), common names, and
    employers that each appear in a handful of reports (an employer's size does not depend on how many
    other people the hub knows)."""
    report_id = f"r{index:08d}"
    clk = bytes(rng.getrandbits(8) & rng.getrandbits(8) for _ in range(128))
    person = PersonOccurrence(
        occ_id=f"{report_id}#0",
        report_id=report_id,
        role="SUSPECTED_VICTIM",
        minor=False,
        subject_key_id=f"{report_id}/s0",
        documents=(f"doc{rng.randrange(10**9)}",),
        contacts=(f"phone{rng.randrange(10**9)}",),
        clk=clk,
        dob_key=f"dob:{rng.randrange(25_000)}",
        # and the six DOB-neighbourhood keys a person with a full DOB and a two-word name carries at most
        ny_keys=(f"ny:{rng.randrange(5_000)}", *(f"nd:{rng.randrange(10**7)}" for _ in range(6))),
    )
    return ReportFacts(
        report_id=report_id,
        agency=rng.choice(["NZ-CUSTOMS", "NZ-LABOUR", "NGO-SHAKTI"]),
        observed_at=t0 + timedelta(days=rng.randrange(600)),
        accepted_at=t0,
        indicator_type="BORDER_CROSSING",
        elements=frozenset({"ACT_TRANSPORT"}),
        reliability="B",
        credibility="2",
        people=(person,),
        organisations=(f"org{rng.randrange(max(1, index // 5))}",),
    )


def test_cost_per_report_stays_flat_as_known_entities_grow() -> None:
    rng = random.Random(1)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    correlator = Correlator(PLAN)
    timings = {}
    added = 0
    for size in (1_000, 10_000, 100_000):
        while added < size:
            correlator.add(synthetic_report(rng, added, t0))
            added += 1
        probe = [synthetic_report(rng, 10**7 + size + i, t0) for i in range(1_000)]
        start = time.perf_counter()
        for facts in probe:
            touched = correlator.add(facts)
            correlator.evaluate_keys(correlator.affected(facts.report_id, touched))
        timings[size] = (time.perf_counter() - start) / len(probe) * 1e6
        added += len(probe)
    print(
        "\ncorrelation cost per report (add + evaluate its entities), microseconds:",
        json.dumps({f"{k:,} entities": round(v, 1) for k, v in timings.items()}),
    )
    assert timings[100_000] < 2 * timings[1_000], timings


def test_partitioned_design_cost_per_report_link_and_union_stages() -> None:
    """The same probe through the stream design: the link stage (partitionable by key) and the union
    stage (one instance). The union's cost is the single-instance limit of docs/correlation.md."""
    rng = random.Random(1)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    index, union = KeyIndex(), Correlator(PLAN, external_links=True)

    def step(facts: ReportFacts) -> tuple[float, float]:
        start = time.perf_counter()
        links = [link for s in sightings_of(facts) for link in index.add(s)]
        linked = time.perf_counter()
        touched = union.add(facts) | union.add_links(links)
        union.evaluate_keys(union.affected(facts.report_id, touched))
        return linked - start, time.perf_counter() - linked

    timings = {}
    added = 0
    for size in (1_000, 10_000, 100_000):
        while added < size:
            step(synthetic_report(rng, added, t0))
            added += 1
        probe = [step(synthetic_report(rng, 10**7 + size + i, t0)) for i in range(1_000)]
        timings[size] = {
            "link_us": round(sum(p[0] for p in probe) / len(probe) * 1e6, 1),
            "union_us": round(sum(p[1] for p in probe) / len(probe) * 1e6, 1),
        }
        added += len(probe)
    print("\npartitioned design cost per report, microseconds:", json.dumps({f"{k:,}": v for k, v in timings.items()}))
    assert timings[100_000]["union_us"] < 2 * timings[1_000]["union_us"], timings


def test_ir1_per_noise_level_and_linkage_encoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/correlation.md's table: IR-1 on simulate --cases 1000 --seed 7 at noise 0.3 and 0.6, with keys of
    encoding 1 and 2; the cases written in two scripts, and those whose victim's date of birth is written two
    ways, scored on their own. Asserts the issue's bar where it is met (noise 0.3, encoding 2: precision and
    cross-script recall); the rest is reported."""
    import tiphub.keys

    rows = []
    for encoding in (1, 2):
        monkeypatch.setattr(tiphub.keys, "CURRENT_ENCODING", encoding)
        for noise in (0.3, 0.6):
            simulation = simulate(1000, seed=7, noise=noise)
            pipeline = Pipeline(tmp_path / f"e{encoding}-{noise}")
            started = time.perf_counter()
            accepted = pipeline.accept(simulation.reports)
            accept_ms = 1000 * (time.perf_counter() - started) / len(simulation.reports)
            signals = list(pipeline.correlate(accepted).evaluate().values())
            truth = simulation.truth()["requirements"]
            scores = evaluate_against_truth(signals, truth)["IR-1"]
            native = {
                r["report_id"]
                for r in simulation.reports
                if any(not (s.get("name") or "").isascii() for s in r["subjects"])
            }
            crossing = [case for case in truth["IR-1"] if native & set(case["report_ids"])]
            across = evaluate_against_truth(signals, {"IR-1": crossing})["IR-1"]
            # Cases whose victim's full date of birth is written two ways (swapped, mistyped).
            by_id = {r["report_id"]: r for r in simulation.reports}
            misdated = [
                case
                for case in truth["IR-1"]
                if len(
                    {
                        s["date_of_birth"]
                        for rid in case["report_ids"]
                        for s in by_id[rid]["subjects"]
                        if s["role"] == "SUSPECTED_VICTIM" and len(s.get("date_of_birth") or "") == 10
                    }
                )
                > 1
            ]
            dated = evaluate_against_truth(signals, {"IR-1": misdated})["IR-1"]
            rows.append((encoding, noise, scores, across, dated, accept_ms))
    print("\nencoding noise precision recall cross-script-recall (sets) misdated-recall (sets) accept-ms/report")
    for encoding, noise, scores, across, dated, accept_ms in rows:
        print(
            f"{encoding} {noise} {scores['precision']} {scores['recall']} {across['recall']} ({across['truth']}) "
            f"{dated['recall']} ({dated['truth']}) {accept_ms:.2f}"
        )
    # Met at noise 0.3 with encoding 2: IR-1 precision. Not met: recall (0.92 since near dates stopped chaining
    # namesakes), the cases written in another script (0.85: half of them also have a degraded date of birth) and
    # those misdated (0.86), asserted only not to fall back (runs vary by about 0.005: new linkage keys each run).
    [(_, _, best, across, dated, _)] = [row for row in rows if row[:2] == (2, 0.3)]
    assert best["precision"] >= 0.95 and best["recall"] >= 0.91, rows
    assert across["recall"] >= 0.8 and dated["recall"] >= 0.83, rows
    for noise in (0.3, 0.6):
        [one, two] = [row[2]["recall"] for row in rows if row[1] == noise]
        assert two > one, rows


def test_every_requirement_per_noise_level(tmp_path: Path) -> None:
    """docs/correlation.md's per-requirement table: simulate --cases 1000 --seed 7, encoding 2, at noise 0.3
    and 0.6. Asserts the issue's bar (precision and recall >= 0.95) where it is met; the rest is reported."""
    scores = {}
    for noise in (0.3, 0.6):
        simulation = simulate(1000, seed=7, noise=noise)
        pipeline = Pipeline(tmp_path / f"n{noise}")
        signals = list(pipeline.correlate(pipeline.accept(simulation.reports)).evaluate().values())
        scores[noise] = evaluate_against_truth(signals, simulation.truth()["requirements"])
    print("\nnoise requirement truth signals precision recall")
    for noise, by_requirement in scores.items():
        for requirement, score in by_requirement.items():
            print(noise, requirement, score["truth"], score["signals"], score["precision"], score["recall"])
    met = {(n, r) for n, rs in scores.items() for r, s in rs.items() if s["precision"] >= 0.95 and s["recall"] >= 0.95}
    assert {(n, r) for n in (0.3, 0.6) for r in ("IR-2", "IR-3", "IR-4", "IR-5")} <= met, scores
    # IR-1 and IR-6 (IR-1's linking with other elements) at 0.3 meet the bar on precision, not on recall (0.92,
    # 0.91: see docs/correlation.md "Measured"); asserted not to fall back, with the spread of new keys each run.
    for requirement in ("IR-1", "IR-6"):
        score = scores[0.3][requirement]
        assert score["precision"] >= 0.95 and score["recall"] >= 0.89, scores


def test_namesakes_born_days_apart_are_not_chained_into_one_person(tmp_path: Path) -> None:
    """Precision where the simulation is weakest: a population of namesakes. 200 women named Nguyen Thi Lan
    (one of Vietnam's commonest names) born over ten years, one report each, and 200 whose given names are a
    vowel apart (Lan, Linh, Loan, Hung, Hong, Thu, Thuy...). Every merge is wrong. Reported: the share of them
    in an entity with someone else, the largest entity, and the share with a namesake born the same day (what
    equal `dob:` keys join, and always did). Asserted: no chains (entities of at most three)."""
    givens = ["Lan", "Linh", "Loan", "Lien", "Ly", "Hung", "Hong", "Hang", "Thu", "Thao", "Thuy", "Mai", "My", "Minh"]
    print("\ncohort seed merged-share largest same-day-share")
    for cohort, names in (
        ("one name", ["Nguyen Thi Lan"]),
        ("names a vowel apart", [f"Nguyen Thi {g}" for g in givens]),
    ):
        for seed in (1, 2, 3):
            rng = random.Random(seed)
            written = [
                (rng.choice(names), (datetime(1990, 1, 1) + timedelta(days=rng.randrange(3650))).date().isoformat())
                for _ in range(200)
            ]
            reports = [
                make_report(
                    subjects=[
                        {"role": "SUSPECTED_VICTIM", "name": n, "date_of_birth": d, "sex": "F", "identifiers": []}
                    ],
                    organisations=[],
                )
                for n, d in written
            ]
            pipeline = Pipeline(tmp_path / f"{cohort}-{seed}")
            correlator = pipeline.correlate(pipeline.accept(reports))
            entities = Counter(correlator.entity_of[f"{r['report_id']}#0"] for r in reports)
            merged = sum(n for n in entities.values() if n > 1) / len(reports)
            same_day = Counter(written)
            coincide = sum(1 for w in written if same_day[w] > 1) / len(reports)
            print(f"{cohort} {seed} {merged:.3f} {max(entities.values())} {coincide:.3f}")
            assert max(entities.values()) <= 3, (cohort, seed, entities.most_common(3))


def test_a_crowd_of_namesakes_on_near_dates_costs_its_dates_not_its_size(tmp_path: Path) -> None:
    """What a hostile agency's flood of one name on nine dates one slip apart (1999-04-01..09, all sharing
    `1999040*`) costs the correlator per report, and the link stage's near links: reported, and asserted to grow
    far slower than the crowd (before near links were bounded per date: 264 ms at 250, 1.7 s at 500)."""
    from domain.facts import facts_from_accepted
    from domain.linking import by_partition

    n = 1000
    reports = [
        make_report(
            subjects=[
                {
                    "role": "SUSPECTED_VICTIM",
                    "name": "Nguyen Thi Lan",
                    "date_of_birth": f"1999-04-0{1 + i % 9}",
                    "sex": "F",
                    "identifiers": [],
                }
            ],
            organisations=[],
        )
        for i in range(n)
    ]
    facts = [facts_from_accepted(r) for r in Pipeline(tmp_path).accept(reports)]
    correlator, costs = Correlator(PLAN), []
    for report in facts:
        started = time.perf_counter()
        correlator.add(report)
        costs.append(time.perf_counter() - started)
    index, near = KeyIndex(), 0
    for report in facts:
        for sightings in by_partition(sightings_of(report), 1).values():
            near += sum(1 for s in sightings for link in index.add(s) if link.basis == "dob_near")
    window = {at: sum(costs[at - 50 : at]) / 50 * 1000 for at in (250, 500, 1000)}
    print(f"\ncrowd of {n}: ms per report around 250/500/1000: {window}; total {sum(costs):.1f} s; {near} near links")
    assert near <= 60 * n  # a bounded number per report, not one per namesake
    assert window[1000] < 20 * window[250] + 5, window  # the square of 4x would be 16x; a per-pair design 64x
    assert len({correlator.entity_of[f.people[0].occ_id] for f in facts}) == 9  # one entity per date: no chain
