"""`tiphub worker`: assemble the stream stages from settings and run them until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path

import yaml
from aiokafka import TopicPartition

from adapters.sql.anchors import AnchorStore
from adapters.sql.database import Database
from adapters.sql.registry import KeyRegistry
from adapters.sql.vault import SqlKeyVault
from domain.correlate import load_plan
from domain.envelope_keys import EnvelopeKeys
from domain.linkage import Linker
from policies.loader import AGREEMENTS_DIR, foreign_partners, load_directory
from schemas.codec import WireCodec
from streams.accept import AcceptStage
from streams.agents.accept_reports import AcceptReports
from streams.agents.chain_audit import ChainAudit
from streams.agents.correlate_signals import CorrelateSignals
from streams.agents.decide_sharing import DecideSharing
from streams.agents.link_people import LinkPeople
from streams.agents.verify_reports import VerifyReports
from streams.agreements import AgreementHistory, publish_new_agreements
from streams.broker_quirks import detect_kind, quirks_for, resolve_quirks
from streams.feeds import TopicFeed, committed_offsets, end_offsets
from streams.transactional import BatchHandler, TransactionalProcessor
from tiphub.keys import KeyStore
from tiphub.runtime import topics_for
from tiphub.settings import Settings

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0
PLAN_FILE = AGREEMENTS_DIR.parent / "collection_plan.yaml"


def _processor(
    settings: Settings,
    bootstrap: str,
    stage: str,
    input_topic: str,
    handler: BatchHandler,
    *,
    also_from: list[str] | None = None,
    instance_id: str | None = None,
) -> TransactionalProcessor:
    """A stage's transactional processor; its consumer group is `<topic prefix>tiphub.<stage>`."""
    return TransactionalProcessor(
        bootstrap=bootstrap,
        group_id=group_id(settings, stage),
        instance_id=instance_id or settings.instance_id,
        input_topic=input_topic,
        handler=handler,
        client_options=settings.kafka_options(),
        also_from=also_from,
        quirks=quirks_for(settings.broker_kind or detect_kind(bootstrap, **settings.kafka_options())),
    )


def group_id(settings: Settings, stage: str) -> str:
    return f"{settings.topic_prefix}tiphub.{stage}"


def build_verify_processor(settings: Settings, bootstrap: str) -> TransactionalProcessor:
    keys = KeyStore(settings.home)
    topics = topics_for(settings)
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
    handler = VerifyReports(stage, topics, bootstrap, settings.kafka_options())
    return _processor(settings, bootstrap, "verify", topics.submitted, handler)


def build_accept_processor(settings: Settings, bootstrap: str) -> TransactionalProcessor:
    topics = topics_for(settings)
    handler = AcceptReports(topics, bootstrap, settings.kafka_options())
    return _processor(settings, bootstrap, "accept", topics.verified, handler)


def build_decide_processor(settings: Settings, bootstrap: str) -> TransactionalProcessor:
    topics = topics_for(settings)
    handler = DecideSharing(topics, bootstrap, settings.kafka_options())
    return _processor(settings, bootstrap, "decide", topics.accepted, handler, also_from=[topics.retractions])


def build_audit_processor(settings: Settings, bootstrap: str) -> TransactionalProcessor:
    topics = topics_for(settings)
    keys = KeyStore(settings.home)
    handler = ChainAudit(
        topics,
        bootstrap,
        keys.hub_signing_key(),
        keys.hub_signing_key_id(),
        keys.audit_mac_key(),
        AnchorStore(Database(settings.audit_anchor_database)),
        settings.kafka_options(),
    )
    return _processor(settings, bootstrap, "audit", topics.audit_intake, handler)


def build_correlate_processor(settings: Settings, bootstrap: str) -> TransactionalProcessor:
    topics = topics_for(settings)
    plan = load_plan(yaml.safe_load(PLAN_FILE.read_text()))
    handler = CorrelateSignals(
        topics,
        bootstrap,
        group_id(settings, "correlate"),
        plan,
        KeyStore(settings.home).pseudonym_key(),
        settings.kafka_options(),
        frozenset(foreign_partners(settings.agreements_dir)),
    )
    # One union instance holds the global entity state; decisions (who may see what), links and facts
    # are input too.
    return _processor(
        settings,
        bootstrap,
        "correlate",
        topics.accepted,
        handler,
        also_from=[topics.decisions, topics.links, topics.erasures, topics.retractions],
        instance_id="single",
    )


def build_link_processor(settings: Settings, bootstrap: str) -> TransactionalProcessor:
    topics = topics_for(settings)
    handler = LinkPeople(topics, bootstrap, group_id(settings, "link"), settings.kafka_options())
    return _processor(settings, bootstrap, "link", topics.sightings, handler)


async def load_agreements(settings: Settings, bootstrap: str) -> int:
    """Publish the agreements on disk that are not on tip.agreements yet (their load events)."""
    topics = topics_for(settings)
    history = AgreementHistory()
    feed = TopicFeed(bootstrap, [topics.agreements], history.apply, settings.kafka_options())
    await feed.start()
    await feed.stop()
    found = load_directory(settings.agreements_dir or AGREEMENTS_DIR)
    return await publish_new_agreements(bootstrap, topics.agreements, found, history.hashes, settings.kafka_options())


async def destroy_spent_envelope_keys(settings: Settings, bootstrap: str, stop: asyncio.Event) -> None:
    """Destroy each hub envelope key once nothing sealed for it can still be accepted and everything sealed
    for it has been read: its epoch over, the envelope age limit and the clock skew passed, and the verify
    stage's group committed past every record that was on tip.reports.submitted at that moment (measured
    then, compared later, so a busy hub is not waited on forever). Every worker runs this; deleting twice
    is harmless."""
    keys = EnvelopeKeys(
        SqlKeyVault(Database(settings.vault_database), KeyStore(settings.home).vault_keks), settings.envelope_epoch_s
    )
    topics = topics_for(settings)
    tps = [TopicPartition(topics.submitted, p) for p in range(topics.partitions)]
    keep_s = settings.max_envelope_age_s + settings.max_future_skew_s
    measured: dict[int, dict[TopicPartition, int]] = {}
    while not stop.is_set():
        try:
            due = keys.expired(datetime.now(UTC), keep_s)
            if due:
                ends = await end_offsets(bootstrap, tps, settings.kafka_options())
                committed = await committed_offsets(
                    bootstrap, group_id(settings, "verify"), tps, settings.kafka_options()
                )
                for epoch in due:
                    marks = measured.setdefault(epoch, ends)
                    if all(committed[tp] >= marks[tp] for tp in tps) and keys.destroy(epoch):
                        log.info("hub envelope key of epoch %d destroyed", epoch)
                        measured.pop(epoch, None)
        except Exception as exc:  # the broker away, say: try again at the next check
            log.warning("envelope keys not checked (%s)", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.envelope_check_s)


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
    published = await load_agreements(settings, bootstrap)
    log.info("%d new agreement version(s) loaded", published)
    processors = [
        build_verify_processor(settings, bootstrap),
        build_accept_processor(settings, bootstrap),
        build_decide_processor(settings, bootstrap),
        build_audit_processor(settings, bootstrap),
        build_link_processor(settings, bootstrap),
    ]
    if settings.instance_id == "0":
        processors.append(build_correlate_processor(settings, bootstrap))
    log.info("worker %s running %d stage(s) on %s", settings.instance_id, len(processors), bootstrap)
    tasks = [asyncio.create_task(p.run(stop)) for p in processors]
    tasks.append(asyncio.create_task(destroy_spent_envelope_keys(settings, bootstrap, stop)))
    if settings.health_file is not None:
        tasks.append(asyncio.create_task(_heartbeat(settings.health_file, tasks[:], stop)))
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    log.info("worker %s stopped", settings.instance_id)
