"""`tiphub worker`: the stream stages of streams/stages.py, built from settings over one Kafka connection, run
until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml

from adapters.kafka.broker_quirks import resolve_quirks
from adapters.kafka.log import KafkaLog
from adapters.kafka.topic_io import KafkaTopicIO
from adapters.kafka.transactional import TransactionalProcessor
from adapters.sql.anchors import AnchorStore
from domain.correlate import Requirement, load_plan
from domain.linkage import Linker
from domain.log import TopicPartition
from domain.state_store import StageState
from domain.working_set import TableStore
from policies.loader import AGREEMENTS_DIR, foreign_partners, load_directory
from schemas.codec import WireCodec
from streams.accept import AcceptStage
from streams.agreements import AgreementHistory, publish_new_agreements
from streams.stage_context import AuditKeys, Provisions, StageContext, build_handler
from streams.stages import STAGES, Stage, group_id, stage_named
from tiphub.container import Container
from tiphub.runtime import topics_for
from tiphub.settings import Settings

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0
PLAN_FILE = AGREEMENTS_DIR.parent / "collection_plan.yaml"


class SettingsProvisions:
    """streams.stage_context.Provisions from settings: what the stages need beyond the event log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stores = Container(settings)
        self.keys = self.stores.keys

    def verification(self) -> AcceptStage:
        settings, keys = self.settings, self.keys
        return AcceptStage(
            registry=self.stores.registry,
            vault=self.stores.vault,
            hub_key=keys.hub_encryption_key(),
            hub_key_id=keys.hub_key_id(),
            hub_keys=keys.hub_decryption_keys,  # rotation: previous keys open what was sealed for them
            linker=Linker.latest(keys.linkage_keys()),
            linkage_keys=keys.linkage_keys,  # rotation: earlier live versions bridge old and new reports
            key_reload_s=settings.key_reload_s,
            max_envelope_age_s=settings.max_envelope_age_s,
            max_future_skew_s=settings.max_future_skew_s,
            codec=WireCodec(max_bytes=settings.max_value_bytes),
            envelope_keys=self.stores.envelope_keys,
            static_hub_keys=settings.static_hub_key,
        )

    def audit_keys(self) -> AuditKeys:
        return AuditKeys(self.keys.hub_signing_key(), self.keys.hub_signing_key_id(), self.keys.audit_mac_key())

    def anchors(self) -> AnchorStore:
        return self.stores.anchors

    def collection_plan(self) -> list[Requirement]:
        return load_plan(yaml.safe_load(PLAN_FILE.read_text()))

    def pseudonym_key(self) -> bytes:
        return self.keys.pseudonym_key()

    def partners(self) -> frozenset[str]:
        return frozenset(foreign_partners(self.settings.agreements_dir))

    def stage_state(self, stage: str, version: int) -> StageState:
        return self.stores.stage_state(stage, version)

    def stage_tables(self, stage: str) -> TableStore:
        return self.stores.stage_tables(stage)

    def correlator_cache(self) -> int:
        return self.settings.correlator_cache_entries


def build_processor(
    settings: Settings, kafka: KafkaLog, stage: Stage, provisions: Provisions | None = None
) -> TransactionalProcessor:
    """A stage's transactional processor, in consumer group `<topic prefix>tiphub.<stage>`."""
    topics = topics_for(settings)
    group = group_id(settings, stage.name)
    context = StageContext(topics, kafka, group, provisions or SettingsProvisions(settings))
    return kafka.processor(
        group_id=group,
        instance_id="single" if stage.single else settings.instance_id,
        input_topic=stage.input_topic(topics),
        also_from=stage.also_from(topics),
        handler=build_handler(stage, context),
    )


def processor_builder(name: str) -> Callable[[Settings, str], TransactionalProcessor]:
    """Builds stage `name`'s processor from settings and a bootstrap, for a command that runs it on its own."""

    def build(settings: Settings, bootstrap: str) -> TransactionalProcessor:
        kafka = KafkaLog(bootstrap, settings.kafka_options(), settings.broker_kind)
        return build_processor(settings, kafka, stage_named(name))

    return build


# What `tiphub rebuild` runs (tiphub/rebuild.py).
build_decide_processor = processor_builder("decide")
build_link_processor = processor_builder("link")
build_correlate_processor = processor_builder("correlate")


async def load_agreements(settings: Settings, kafka: KafkaLog) -> int:
    """Publish the agreements on disk that are not on tip.agreements yet (their load events)."""
    topics = topics_for(settings)
    history = AgreementHistory()
    feed = kafka.feed({topics.agreements: history.apply})
    await feed.start()
    await feed.stop()
    found = load_directory(settings.agreements_dir or AGREEMENTS_DIR)
    return await publish_new_agreements(
        KafkaTopicIO(kafka.bootstrap, kafka.options), topics.agreements, found, history.hashes
    )


async def destroy_spent_envelope_keys(settings: Settings, kafka: KafkaLog, stop: asyncio.Event) -> None:
    """Destroy each hub envelope key once nothing sealed for it can still be accepted and everything sealed
    for it has been read: its epoch over, the envelope age limit and the clock skew passed, and the verify
    stage's group committed past every record that was on tip.reports.submitted at that moment (measured
    then, compared later, so a busy hub is not waited on forever). Every worker runs this; deleting twice
    is harmless."""
    keys = Container(settings).envelope_keys
    topics = topics_for(settings)
    tps = [TopicPartition(topics.submitted, p) for p in range(topics.partitions)]
    keep_s = settings.max_envelope_age_s + settings.max_future_skew_s
    measured: dict[int, dict[TopicPartition, int]] = {}
    while not stop.is_set():
        try:
            due = keys.expired(datetime.now(UTC), keep_s)
            if due:
                ends = await kafka.stable_ends(tps)
                committed = await kafka.committed(group_id(settings, "verify"), tps)
                for epoch in due:
                    marks = measured.setdefault(epoch, ends)
                    if all(committed[tp] >= marks[tp] for tp in tps) and keys.destroy(epoch):
                        log.info("hub envelope key of epoch %d destroyed", epoch)
                        measured.pop(epoch, None)
        except Exception as exc:  # the broker away, say: try again at the next check
            log.warning("envelope keys not checked (%s)", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.envelope_check_s)


def log_tasks() -> None:
    """Log where every task of the worker waits: what a stage that stopped making progress is stuck on."""
    for task in asyncio.all_tasks():
        stack = io.StringIO()
        task.print_stack(limit=12, file=stack)
        log.warning("task %s: %s", task.get_name(), stack.getvalue().replace("\n", " | "))


async def _heartbeat(path: Path, stages: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Touch `path` while every stage runs: a liveness probe that checks its age sees a stuck or dead stage."""
    while not stop.is_set() and not any(task.done() for task in stages):
        await asyncio.to_thread(path.touch)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEARTBEAT_S)


async def run_worker(settings: Settings, bootstrap: str) -> None:
    quirks = resolve_quirks(bootstrap, settings.broker_kind, **settings.kafka_options())
    settings = settings.model_copy(update={"broker_kind": quirks.kind})  # every stage: the same kind, asked once
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, log_tasks)  # `kill -USR1`: where each stage is waiting
    kafka = KafkaLog(bootstrap, settings.kafka_options(), quirks.kind)  # every stage's reads and writes
    published = await load_agreements(settings, kafka)
    log.info("%d new agreement version(s) loaded", published)
    provisions = SettingsProvisions(settings)
    processors = [
        build_processor(settings, kafka, stage, provisions)
        for stage in STAGES
        if not stage.single or settings.instance_id == "0"  # a single-instance stage runs on worker 0
    ]
    log.info("worker %s running %d stage(s) on %s", settings.instance_id, len(processors), bootstrap)
    tasks = [asyncio.create_task(p.run(stop), name=p.group_id) for p in processors]
    tasks.append(asyncio.create_task(destroy_spent_envelope_keys(settings, kafka, stop)))
    if settings.health_file is not None:
        tasks.append(asyncio.create_task(_heartbeat(settings.health_file, tasks[:], stop)))
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    log.info("worker %s stopped", settings.instance_id)
