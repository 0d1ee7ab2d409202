"""The one list of stages (streams/stages.py): what the worker runs and every lag is measured on."""

from __future__ import annotations

import re
from dataclasses import replace
from importlib import import_module

import pytest

from streams.stage_context import build_handler
from streams.stages import STAGES, group_id, stage_inputs, stage_named
from streams.topics import Topics
from tiphub.settings import Settings

TOPICS = Topics("t.", 6)


def test_every_topic_a_stage_names_is_one_of_the_hubs() -> None:
    hub_topics = {spec.name for spec in TOPICS.specs()}
    for stage in STAGES:
        named = [stage.input_topic(TOPICS), *stage.also_from(TOPICS), *stage.outputs(TOPICS)]
        assert set(named) <= hub_topics, stage.name


def test_the_lag_of_each_stage_counts_its_input_and_the_facts_it_reads_in_its_transactions() -> None:
    every = list(range(6))
    assert (
        stage_inputs(TOPICS)
        == TOPICS.stage_inputs()
        == {
            "verify": [("t.tip.reports.submitted", every)],
            "accept": [("t.tip.reports.verified", every)],
            "decide": [("t.tip.reports.accepted", every), ("t.tip.retractions", every)],
            "audit": [("t.tip.audit.intake", every)],
            "link": [("t.tip.sightings", every)],
            "correlate": [
                ("t.tip.reports.accepted", every),
                ("t.tip.decisions", every),
                ("t.tip.links", [0]),
                ("t.tip.erasures", every),
                ("t.tip.retractions", every),
            ],
        }
    )


def test_each_stage_has_a_consumer_group_of_its_own_under_the_hubs_prefix() -> None:
    settings = Settings(topic_prefix="t.")
    groups = [group_id(settings, stage.name) for stage in STAGES]
    assert len(set(groups)) == len(STAGES)
    assert group_id(settings, "accept") == "t.tiphub.accept"


def test_each_entry_names_the_module_that_builds_its_handler() -> None:
    for stage in STAGES:
        assert callable(import_module(stage.handler).build), stage.name


def test_only_the_union_runs_as_one_instance_hub_wide() -> None:
    assert [stage.name for stage in STAGES if stage.single] == ["correlate"]
    assert stage_named("link").reads == "sightings"


def test_a_stage_whose_handler_lives_outside_the_agents_is_refused() -> None:
    stranger = replace(STAGES[0], handler="gateway.app")
    with pytest.raises(ValueError, match=re.escape("handler 'gateway.app' is not a module of streams.agents")):
        build_handler(stranger, None)  # type: ignore[arg-type]
