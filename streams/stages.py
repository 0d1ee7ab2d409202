"""The hub's stream stages, one entry each: what it reads, what it writes, and which module builds its handler.

Everything that knows the stages derives from this list: the worker runs them (tiphub/worker.py), their
lag is measured on `stage_inputs` (Topics.stage_inputs, the gateway's /metrics, `tiphub bench`, the tests'
harness), and each consumer group is `group_id(settings, stage)`. Adding a stage is one entry here and its
handler module under streams/agents/, whose `build(context)` makes the handler (streams/stage_context.py).

The list names its handler modules instead of importing them: the topics read the list (Topics.stage_inputs)
and every handler imports the topics, so an import here would close a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class TopicLayout(Protocol):
    """The hub's topics (streams.topics.Topics): a topic per attribute, and each topic's partition count."""

    def partitions_of(self, topic: str) -> int: ...


class Prefixed(Protocol):
    @property
    def topic_prefix(self) -> str: ...


@dataclass(frozen=True)
class Stage:
    """One stream stage. Topics are named by their `Topics` attribute (`"accepted"` is tip.reports.accepted)."""

    name: str  # its consumer group is `<topic prefix>tiphub.<name>`
    reads: str  # the input it processes in batches
    writes: tuple[str, ...]
    handler: str  # the module whose build(context) makes its BatchHandler
    # Further inputs read in the same transactions: facts its lag counts, so a quiet hub has applied them too.
    also_reads: tuple[str, ...] = ()
    single: bool = False  # one instance hub-wide (state that spans every partition): worker 0 runs it

    def input_topic(self, topics: TopicLayout) -> str:
        return _topic(topics, self.reads)

    def also_from(self, topics: TopicLayout) -> list[str]:
        return [_topic(topics, name) for name in self.also_reads]

    def outputs(self, topics: TopicLayout) -> list[str]:
        return [_topic(topics, name) for name in self.writes]

    def inputs(self, topics: TopicLayout) -> list[tuple[str, list[int]]]:
        """Every input partition: what its consumer group's lag is measured on."""
        return [
            (topic, list(range(topics.partitions_of(topic))))
            for topic in [self.input_topic(topics), *self.also_from(topics)]
        ]


def _topic(topics: TopicLayout, name: str) -> str:
    topic = getattr(topics, name)
    if not isinstance(topic, str):
        raise TypeError(f"Topics.{name} is not a topic")
    return topic


STAGES: tuple[Stage, ...] = (
    Stage("verify", "submitted", ("verified", "rejected", "audit_intake"), "streams.agents.verify_reports"),
    Stage(
        "accept",
        "verified",
        ("accepted", "sightings", "retractions", "rejected", "audit_intake"),
        "streams.agents.accept_reports",
    ),
    Stage(
        "decide",
        "accepted",
        ("decisions", "audit_intake"),
        "streams.agents.decide_sharing",
        also_reads=("retractions",),
    ),
    Stage("audit", "audit_intake", ("audit",), "streams.agents.chain_audit"),
    Stage("link", "sightings", ("links",), "streams.agents.link_people"),
    # The union: entities span every partition. Decisions (who may see what), links and facts are input too.
    Stage(
        "correlate",
        "accepted",
        ("signals", "coverage", "entities"),
        "streams.agents.correlate_signals",
        also_reads=("decisions", "links", "erasures", "retractions"),
        single=True,
    ),
)


def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"no stage is named {name!r}: one of {', '.join(s.name for s in STAGES)}")


def group_id(settings: Prefixed, stage: str) -> str:
    return f"{settings.topic_prefix}tiphub.{stage}"


def stage_inputs(topics: TopicLayout) -> dict[str, list[tuple[str, list[int]]]]:
    """Each stage's input partitions, the facts it reads in its transactions included."""
    return {stage.name: stage.inputs(topics) for stage in STAGES}
