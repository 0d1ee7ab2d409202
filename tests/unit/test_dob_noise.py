"""Dates of birth as agencies really write them: day and month swapped, a digit mistyped, the year only.

Each case runs the real accept stage (the keyed material it publishes) and both ways the hub links
people: the union correlator alone ("single") and the partitioned link stage on tip.sightings feeding
it ("partitioned"). One person written two ways must be one entity; the near-misses must stay two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from domain.linkage import near_dobs
from tests.correlation_kit import Pipeline
from tests.factories import make_report


def subject(name: str, dob: str) -> dict[str, Any]:
    return {"role": "SUSPECTED_VICTIM", "name": name, "date_of_birth": dob, "sex": "F", "identifiers": []}


def one_person(tmp_path: Path, mode: str, a: tuple[str, str], b: tuple[str, str]) -> bool:
    pipeline = Pipeline(tmp_path, mode)
    first, second = (make_report(subjects=[subject(*written)], organisations=[]) for written in (a, b))
    correlator = pipeline.correlate(pipeline.accept([first, second]))
    return correlator.entity_of[f"{first['report_id']}#0"] == correlator.entity_of[f"{second['report_id']}#0"]


SAME_PERSON = {
    "day and month swapped": (("Somchai Srisuk", "1999-04-02"), ("Somchai Srisuk", "1999-02-04")),
    "swapped, across scripts": (("Somchai Srisuk", "1999-04-02"), ("สมชาย ศรีสุข", "1999-02-04")),
    "a day digit mistyped": (("Chan Sokha", "2008-04-02"), ("Chan Sokha", "2008-04-03")),
    "a month digit mistyped": (("Chan Sokha", "2008-04-02"), ("Sokha Chan", "2008-01-02")),
    "the year's last digit mistyped": (("Nguyen Thi Lan", "1999-04-02"), ("Nguyễn Thị Lan", "1998-04-02")),
    "a digit mistyped, heard spelling": (("Somchai Srisuk", "1999-04-02"), ("Somchay Srisook", "1999-04-22")),
    "the year only": (("Olena Shevchenko", "1995"), ("Олена Шевченко", "1995-07-14")),
}


@pytest.mark.parametrize("mode", ["single", "partitioned"])
@pytest.mark.parametrize(("a", "b"), SAME_PERSON.values(), ids=SAME_PERSON.keys())
def test_one_person_with_a_date_of_birth_written_wrongly_is_one_entity(
    tmp_path: Path, mode: str, a: tuple[str, str], b: tuple[str, str]
) -> None:
    assert one_person(tmp_path, mode, a, b)


NEAR_MISSES = {
    "two digits apart": (("Chan Sokha", "2008-04-02"), ("Chan Sokha", "2008-04-13")),
    "two digits apart, a day transposed": (("Chan Sokha", "2008-04-12"), ("Chan Sokha", "2008-04-21")),
    "a century apart": (("Chan Sokha", "1908-04-02"), ("Chan Sokha", "2008-04-02")),
    # The year's tens digit: ten years is an age the reader would question, not a slip to link through.
    "a decade apart": (("Nguyen Thi Lan", "1999-04-02"), ("Nguyễn Thị Lan", "1989-04-02")),
    # Given names a vowel apart are different names (their skeletons agree: Lan, Linh, Loan all give `ln`).
    "a near date and a given name a vowel apart": (("Nguyen Thi Lan", "1999-04-02"), ("Nguyen Thi Linh", "1999-04-03")),
    # One name word in common (Somchai) is not enough with a near date: the names must be close (Dice 0.80).
    "a near date and another family name": (("Somchai Srisuk", "1999-04-02"), ("Somchai Boonmee", "1999-04-03")),
    "a near date and another given name": (("Malee Saelim", "1999-04-02"), ("Sukanya Saelim", "1999-02-04")),
    # One word of name is too little to lean on a near date: a namesake is too likely.
    "a near date and a one-word name": (("Sokha", "2008-04-02"), ("Sokha", "2008-04-03")),
    "another year, the year only": (("Olena Shevchenko", "1995"), ("Олена Шевченко", "1996-07-14")),
}


@pytest.mark.parametrize("mode", ["single", "partitioned"])
@pytest.mark.parametrize(("a", "b"), NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
def test_near_misses_stay_two_people(tmp_path: Path, mode: str, a: tuple[str, str], b: tuple[str, str]) -> None:
    assert not one_person(tmp_path, mode, a, b)


def test_two_dates_one_slip_apart_share_exactly_one_neighbour_and_far_dates_none() -> None:
    def shared(a: str, b: str) -> int:
        return len(set(near_dobs(a)) & set(near_dobs(b)))

    assert shared("1999-04-02", "1999-04-03") == 1  # the masked day digit
    assert shared("1999-04-02", "1999-02-04") == 1  # the swap
    assert shared("1999-04-02", "1999-04-02") == len(near_dobs("1999-04-02"))  # the dob: key links these, once
    assert shared("1999-04-02", "1999-04-13") == 0
    assert shared("1999-04-20", "1999-04-02") == 0  # day 20 cannot be a month: no swap
    assert "1999|0404|swap" not in near_dobs("1999-04-04")  # day and month equal: a swap changes nothing


def people(tmp_path: Path, mode: str, written: list[tuple[str, str, bool]], seed: int = 0) -> list[int]:
    """Reports of one subject each, (name, DOB, with the shared phone): the entity of each, numbered in order."""
    pipeline = Pipeline(tmp_path, mode)
    phone = [{"kind": "PHONE", "value": "+66 81 234 5678"}]
    reports = [
        make_report(subjects=[{**subject(name, dob), "identifiers": phone if shared else []}], organisations=[])
        for name, dob, shared in written
    ]
    correlator = pipeline.correlate(pipeline.accept(reports), seed)
    entities = [correlator.entity_of[f"{r['report_id']}#0"] for r in reports]
    return [sorted(set(entities), key=entities.index).index(e) for e in entities]


@pytest.mark.parametrize("mode", ["single", "partitioned"])
def test_namesakes_born_days_apart_stay_apart_whatever_order_they_arrive_in(tmp_path: Path, mode: str) -> None:
    """Two dates one slip apart under one name are one person with a slip. A third near either is a crowd of
    namesakes, and no near link among them joins anyone: not the first pair to arrive, not a chain."""
    pair = [("Nguyen Thi Lan", "1999-04-02", False), ("Nguyễn Thị Lan", "1999-04-03", False)]
    assert people(tmp_path / "pair", mode, pair) == [0, 0]
    crowd = [*pair, ("Nguyen Thi Lan", "1999-04-05", False)]  # all three share 1999040*
    chain = [*pair, ("Nguyen Thi Lan", "1999-05-03", False)]  # near the second only: a chain of two slips
    for name, written in (("crowd", crowd), ("chain", chain)):
        for seed in range(3):
            assert people(tmp_path / f"{name}{seed}", mode, written, seed) == [0, 1, 2], (name, seed)
            assert people(tmp_path / f"{name}{seed}r", mode, written[::-1], seed) == [0, 1, 2], (name, seed)


def test_a_namesake_retracted_lets_the_pair_it_made_ambiguous_be_one_person_again(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path)
    written = [("Nguyen Thi Lan", "1999-04-02"), ("Nguyễn Thị Lan", "1999-04-03"), ("Nguyen Thi Lan", "1999-04-05")]
    reports = [make_report(subjects=[subject(*w)], organisations=[]) for w in written]
    correlator = pipeline.correlate(pipeline.accept(reports))
    occ = [f"{r['report_id']}#0" for r in reports]
    assert len({correlator.entity_of[o] for o in occ}) == 3
    correlator.retract([reports[2]["report_id"]])
    assert correlator.entity_of[occ[0]] == correlator.entity_of[occ[1]]


@pytest.mark.parametrize("mode", ["single", "partitioned"])
def test_a_shared_phone_joins_namesakes_one_slip_apart_in_a_crowd_but_not_dates_far_apart(
    tmp_path: Path, mode: str
) -> None:
    """In a crowd of namesakes a near date alone joins no one; a phone both reports give does (contact links,
    level 2, refuse clusters whose dates disagree, and dates one slip apart under one name do not). A phone
    shared by dates far apart does not."""
    third = ("Nguyen Thi Lan", "1999-04-05", False)  # the namesake that makes near dates ambiguous
    assert people(
        tmp_path / "near", mode, [("Nguyen Thi Lan", "1999-04-02", True), ("Nguyen Thi Lan", "1999-04-03", True), third]
    ) == [0, 0, 1]
    assert people(
        tmp_path / "far", mode, [("Nguyen Thi Lan", "1999-04-02", True), ("Nguyen Thi Lan", "1999-07-19", True), third]
    ) == [0, 1, 0]  # the first and the third, one slip apart and nobody else near, are one person


def test_the_union_stage_weighs_near_dates_at_level_2_whenever_their_links_arrive() -> None:
    """The union stage (ScopedCorrelation) holds links that arrive before their reports: a near-date link held so
    must still join at level 2 (only where it is the one reading), never as a strong link. 60 namesakes born over
    two years, one report each: the same entities with each report's links after it, all links first, shuffled."""
    import random
    import tempfile
    from collections import Counter
    from datetime import UTC, datetime, timedelta

    from domain.facts import facts_from_accepted
    from domain.linking import KeyIndex, by_partition, sightings_of
    from domain.scoped import HUB_SCOPE, ScopedCorrelation
    from tests.correlation_kit import PLAN

    rng = random.Random(3)
    born = [(datetime(1990, 1, 1) + timedelta(days=rng.randrange(730))).date().isoformat() for _ in range(60)]
    reports = [make_report(subjects=[subject("Nguyen Thi Lan", d)], organisations=[]) for d in born]
    with tempfile.TemporaryDirectory() as home:
        facts = [facts_from_accepted(r) for r in Pipeline(Path(home)).accept(reports)]
    index, batches = KeyIndex(), []
    for f in facts:
        batches.append([link for ss in by_partition(sightings_of(f), 1).values() for s in ss for link in index.add(s)])
    assert any(link.basis == "dob_near" for batch in batches for link in batch)
    now = datetime(2026, 11, 1, tzinfo=UTC)

    def entities(events: list[tuple[str, Any]]) -> list[tuple[str, ...]]:
        state = ScopedCorrelation(PLAN, b"k" * 32)
        for kind, item in events:
            state.accept(item, now) if kind == "report" else state.add_links(item)
        correlator = state.scopes[HUB_SCOPE].correlator
        assert correlator is not None
        groups = Counter(correlator.entity_of[f.people[0].occ_id] for f in facts)
        assert max(groups.values()) <= 3  # no chain of namesakes
        return sorted(tuple(sorted(correlator.entity_members[e])) for e in groups)

    after = entities([e for f, b in zip(facts, batches, strict=True) for e in (("report", f), ("links", b))])
    first = entities([("links", b) for b in batches] + [("report", f) for f in facts])
    shuffled = [("report", f) for f in facts] + [("links", b) for b in batches]
    random.Random(0).shuffle(shuffled)
    assert after == first == entities(shuffled)


def test_the_link_stage_files_a_sighting_with_only_the_key_it_is_filed_under(tmp_path: Path) -> None:
    """A sighting is compared only with the sightings filed under its own key, and it is stored once per key its
    occurrence has: carrying every name key of the occurrence made the link stage's state twice its size."""
    from domain.facts import facts_from_accepted
    from domain.linking import sightings_of

    pipeline = Pipeline(tmp_path)
    accepted = pipeline.accept([make_report(subjects=[subject("Samantha Jones", "1996-06-20")], organisations=[])])
    facts = facts_from_accepted(accepted[0])
    sightings = sightings_of(facts)
    assert len(sightings) == 1 + len(facts.people[0].ny_keys)  # its dob: key, and each name key
    # Each carries only the name key it is filed under (all it is compared under), not every key of its occurrence.
    assert all(s.ny_keys == ((s.key,) if s.key.startswith(("ny:", "nd:")) else ()) for s in sightings)
