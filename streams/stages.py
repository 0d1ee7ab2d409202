"""The hub's stream stages, one entry each: what it reads, what it writes, and how its handler is built.

Everything that knows the stages derives from this list: the worker runs them (streams/worker.py), their
lag is measured on `stage_inputs` (Topics.stage_inputs, the gateway's /metrics, `tiphub bench`, the tests'
harness), and each consumer group is `group_id(settings, stage)`. Adding a stage is one entry here and its
handler module under streams/agents/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import yaml

from domain.log import BatchHandler, EventLog
from policies.loader import AGREEMENTS_DIR, foreign_partners
from schemas.codec import WireCodec
from streams.accept import AcceptStage
from streams.agents.accept_reports import AcceptReports
from streams.agents.chain_audit import ChainAudit
from streams.agents.correlate_signals import CorrelateSignals
from streams.agents.decide_sharing import DecideSharing
from streams.agents.link_people import LinkPeople
from streams.agents.verify_reports import VerifyReports
from streams.correlate import load_plan
from streams.topics import Topics
from tiphub.audit import AnchorStore
from tiphub.database import Database
from tiphub.envelope_keys import EnvelopeKeys
from tiphub.keys import KeyRegistry, KeyStore
from tiphub.linkage import Linker
from tiphub.settings import Settings
from tiphub.vault import SqlKeyVault

PLAN_FILE = AGREEMENTS_DIR.parent / "collection_plan.yaml"


@dataclass(frozen=True)
class StageContext:
    """What a stage's handler is built from: the hub's settings and topics, the event log it reads and
    writes through (the Kafka adapter in a worker), and its consumer group."""

    settings: Settings
    topics: Topics
    log: EventLog
    group_id: str


@dataclass(frozen=True)
class Stage:
    """One stream stage. Topics are named by their `Topics` attribute (`"accepted"` is tip.reports.accepted)."""

    name: str  # its consumer group is `<topic prefix>tiphub.<name>`
    reads: str  # the input it processes in batches
    writes: tuple[str, ...]
    build: Callable[[StageContext], BatchHandler]
    # Further inputs read in the same transactions: facts its lag counts, so a quiet hub has applied them too.
    also_reads: tuple[str, ...] = ()
    single: bool = False  # one instance hub-wide (state that spans every partition): worker 0 runs it

    def input_topic(self, topics: Topics) -> str:
        return _topic(topics, self.reads)

    def also_from(self, topics: Topics) -> list[str]:
        return [_topic(topics, name) for name in self.also_reads]

    def outputs(self, topics: Topics) -> list[str]:
        return [_topic(topics, name) for name in self.writes]

    def inputs(self, topics: Topics) -> list[tuple[str, list[int]]]:
        """Every input partition: what its consumer group's lag is measured on."""
        return [
            (topic, list(range(topics.partitions_of(topic))))
            for topic in [self.input_topic(topics), *self.also_from(topics)]
        ]


def _topic(topics: Topics, name: str) -> str:
    topic = getattr(topics, name)
    if not isinstance(topic, str):
        raise TypeError(f"Topics.{name} is not a topic")
    return topic


def _verify(context: StageContext) -> BatchHandler:
    settings = context.settings
    keys = KeyStore(settings.home)
    stage = AcceptStage(
        registry=KeyRegistry(Database(settings.registry_database)),
        vault=SqlKeyVault(Database(settings.vault_database), keys.vault_keks),
        hub_key=keys.hub_encryption_key(),
        hub_key_id=keys.hub_key_id(),
        hub_keys=keys.hub_decryption_keys,  # rotation: previous keys open what was sealed for them
        linker=Linker.latest(keys.linkage_keys()),
        linkage_keys=keys.linkage_keys,  # rotation: earlier live versions bridge old and new reports
        key_reload_s=settings.key_reload_s,
        max_envelope_age_s=settings.max_envelope_age_s,
        max_future_skew_s=settings.max_future_skew_s,
        codec=WireCodec(max_bytes=settings.max_value_bytes),
        envelope_keys=EnvelopeKeys(
            SqlKeyVault(Database(settings.vault_database), keys.vault_keks), settings.envelope_epoch_s
        ),
        static_hub_keys=settings.static_hub_key,
    )
    return VerifyReports(stage, context.topics, context.log)


def _chain_audit(context: StageContext) -> BatchHandler:
    keys = KeyStore(context.settings.home)
    return ChainAudit(
        context.topics,
        context.log,
        keys.hub_signing_key(),
        keys.hub_signing_key_id(),
        keys.audit_mac_key(),
        AnchorStore(Database(context.settings.audit_anchor_database)),
    )


def _correlate(context: StageContext) -> BatchHandler:
    settings = context.settings
    return CorrelateSignals(
        context.topics,
        context.log,
        context.group_id,
        load_plan(yaml.safe_load(PLAN_FILE.read_text())),
        KeyStore(settings.home).pseudonym_key(),
        frozenset(foreign_partners(settings.agreements_dir)),
    )


STAGES: tuple[Stage, ...] = (
    Stage("verify", "submitted", ("verified", "rejected", "audit_intake"), _verify),
    Stage(
        "accept",
        "verified",
        ("accepted", "sightings", "retractions", "rejected", "audit_intake"),
        lambda c: AcceptReports(c.topics, c.log),
    ),
    Stage(
        "decide",
        "accepted",
        ("decisions", "audit_intake"),
        lambda c: DecideSharing(c.topics, c.log),
        also_reads=("retractions",),
    ),
    Stage("audit", "audit_intake", ("audit",), _chain_audit),
    Stage("link", "sightings", ("links",), lambda c: LinkPeople(c.topics, c.log, c.group_id)),
    # The union: entities span every partition. Decisions (who may see what), links and facts are input too.
    Stage(
        "correlate",
        "accepted",
        ("signals", "coverage", "entities"),
        _correlate,
        also_reads=("decisions", "links", "erasures", "retractions"),
        single=True,
    ),
)


def stage_named(name: str) -> Stage:
    for candidate in STAGES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no stage is named {name!r}: one of {', '.join(s.name for s in STAGES)}")


def group_id(settings: Settings, stage: str) -> str:
    return f"{settings.topic_prefix}tiphub.{stage}"


def stage_inputs(topics: Topics) -> dict[str, list[tuple[str, list[int]]]]:
    """Each stage's input partitions, the facts it reads in its transactions included."""
    return {s.name: s.inputs(topics) for s in STAGES}
