"""Whom `tiphub erase --follow-links` reaches: the records the hub's correlation links to the person now,
worked out from the accepted reports and the link stage's links (streams/erasure.linked_subject_keys).
A wrong or hostile report that once joined two people, then retracted, must not take the other along;
an erasure in between must not change the answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from domain.facts import facts_from_accepted
from domain.linking import KeyIndex, Link, sightings_of
from streams.erasure import linked_subject_keys
from tests.correlation_kit import Pipeline
from tests.factories import bridge_of, make_report, person_as_recorded

SOKHA, DARA, BRIDGE = person_as_recorded(0, "both"), person_as_recorded(1, "both"), bridge_of(0, 1)
# Sokha, misspelt and without her passport: linked to her by name and date of birth only.
MISSPELT = person_as_recorded(0, "name") | {"name": "Sokha Chann"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return Pipeline(Path(tmp_path_factory.mktemp("erasure-links")))


def accepted_with_links(pipeline: Pipeline, *people: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Link]]:
    """One report per person, from three agencies, accepted; and the links the link stage finds."""
    agencies = ["NZ-CUSTOMS", "NZ-POLICE", "NZ-LABOUR", "NZ-DIA"]
    reports = [make_report(source_agency=agencies[i], subjects=[p]) for i, p in enumerate(people)]
    accepted = pipeline.accept(reports)
    index = KeyIndex()
    links = [link for record in accepted for s in sightings_of(facts_from_accepted(record)) for link in index.add(s)]
    return accepted, links


def key(record: dict[str, Any]) -> str:
    return str(record["subjects"][0]["subject_key_id"])


def test_a_record_linked_by_name_is_followed_and_one_of_another_person_is_not(pipeline: Pipeline) -> None:
    accepted, links = accepted_with_links(pipeline, SOKHA, DARA, MISSPELT)
    sokha, dara, misspelt = accepted
    assert linked_subject_keys(accepted, links, [key(sokha)]) == [key(misspelt)]
    assert linked_subject_keys(accepted, links, [key(dara)]) == []


def test_a_retracted_bridge_links_nobody_before_or_after_the_person_is_erased(pipeline: Pipeline) -> None:
    accepted, links = accepted_with_links(pipeline, SOKHA, DARA, BRIDGE)
    sokha, dara, bridge = accepted
    assert linked_subject_keys(accepted, links, [key(sokha)]) == sorted([key(dara), key(bridge)])  # joined
    retracted = {bridge["report_id"]}
    # The bridge's own record holds Sokha's passport: the request names it by token, not by a link.
    assert key(dara) not in linked_subject_keys(accepted, links, [key(sokha)], retracted)
    # Erased first (without --follow-links), the bridge retracted, then run again with --follow-links.
    assert key(dara) not in linked_subject_keys(accepted, links, [key(sokha)], retracted, erased={key(sokha)})


def test_the_persons_own_record_in_a_retracted_report_is_still_theirs(pipeline: Pipeline) -> None:
    accepted, links = accepted_with_links(pipeline, SOKHA, MISSPELT)
    sokha, misspelt = accepted
    retracted = {misspelt["report_id"]}
    assert linked_subject_keys(accepted, links, [key(sokha)], retracted) == [key(misspelt)]


def test_someone_else_already_erased_is_not_named_again(pipeline: Pipeline) -> None:
    accepted, links = accepted_with_links(pipeline, SOKHA, MISSPELT)
    sokha, misspelt = accepted
    assert linked_subject_keys(accepted, links, [key(sokha)], erased={key(misspelt)}) == []
