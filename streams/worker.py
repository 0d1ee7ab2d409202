"""`tiphub worker`: assemble the stream stages from settings and run them until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal

import yaml

from policies.loader import AGREEMENTS_DIR, load_directory
from schemas.codec import WireCodec
from streams.accept import AcceptStage
from streams.agents.accept_reports import AcceptReports
from streams.agents.chain_audit import ChainAudit
from streams.agents.correlate_signals import CorrelateSignals
from streams.agents.decide_sharing import DecideSharing
from streams.agreements import AgreementHistory, publish_new_agreements
from streams.correlate import load_plan
from streams.feeds import TopicFeed
from streams.topics import Topics
from streams.transactional import TransactionalProcessor
from tiphub.audit import AnchorStore
from tiphub.database import Database
from tiphub.keys import KeyRegistry, KeyStore
from tiphub.linkage import Linker
from tiphub.settings import Settings
from tiphub.vault import SqlKeyVault

log = logging.getLogger(__name__)
PLAN_FILE = AGREEMENTS_DIR.parent / "collection_plan.yaml"


def build_accept_processor(settings: Settings, bootstrap: str) -> TransactionalProcessor:
    keys = KeyStore(settings.home)
    topics = Topics(settings.topic_prefix, settings.partitions)
    stage = AcceptStage(
        registry=KeyRegistry(Database(settings.registry_database)),
        vault=SqlKeyVault(Database(settings.vault_database), keys.vault_kek()),
        hub_key=keys.hub_encryption_key(),
        hub_key_id=keys.hub_key_id(),
        linker=Linker.latest(keys.linkage_keys()),
        max_envelope_age_s=settings.max_envelope_age_s,
        max_future_skew_s=settings.max_future_skew_s,
        codec=WireCodec(max_bytes=settings.max_value_bytes),
    )
    options = settings.kafka_options()
    return TransactionalProcessor(
        bootstrap=bootstrap,
        group_id=f"{settings.topic_prefix}tiphub.accept",
        instance_id=settings.instance_id,
        input_topic=topics.submitted,
        handler=AcceptReports(stage, topics, bootstrap, options),
        client_options=options,
    )


def build_decide_processor(settings: Settings, bootstrap: str) -> TransactionalProcessor:
    topics = Topics(settings.topic_prefix, settings.partitions)
    options = settings.kafka_options()
    return TransactionalProcessor(
        bootstrap=bootstrap,
        group_id=f"{settings.topic_prefix}tiphub.decide",
        instance_id=settings.instance_id,
        input_topic=topics.accepted,
        handler=DecideSharing(topics, bootstrap, options),
        client_options=options,
        also_from=[topics.retractions],
    )


def build_audit_processor(settings: Settings, bootstrap: str) -> TransactionalProcessor:
    topics = Topics(settings.topic_prefix, settings.partitions)
    keys = KeyStore(settings.home)
    options = settings.kafka_options()
    return TransactionalProcessor(
        bootstrap=bootstrap,
        group_id=f"{settings.topic_prefix}tiphub.audit",
        instance_id=settings.instance_id,
        input_topic=topics.audit_intake,
        handler=ChainAudit(
            topics,
            bootstrap,
            keys.hub_signing_key(),
            keys.hub_signing_key_id(),
            AnchorStore(Database(settings.audit_anchor_database)),
            options,
        ),
        client_options=options,
    )


def build_correlate_processor(settings: Settings, bootstrap: str) -> TransactionalProcessor:
    topics = Topics(settings.topic_prefix, settings.partitions)
    options = settings.kafka_options()
    group = f"{settings.topic_prefix}tiphub.correlate"
    plan = load_plan(yaml.safe_load(PLAN_FILE.read_text()))
    return TransactionalProcessor(
        bootstrap=bootstrap,
        group_id=group,
        instance_id="single",  # one correlator instance holds the global entity state
        input_topic=topics.accepted,
        handler=CorrelateSignals(topics, bootstrap, group, plan, options),
        client_options=options,
        also_from=[topics.erasures, topics.retractions],  # facts are input too: they act without waiting for a report
    )


async def load_agreements(settings: Settings, bootstrap: str) -> int:
    """Publish the agreements on disk that are not on tip.agreements yet (their load events)."""
    topics = Topics(settings.topic_prefix, settings.partitions)
    history = AgreementHistory()
    feed = TopicFeed(bootstrap, [topics.agreements], history.apply, settings.kafka_options())
    await feed.start()
    await feed.stop()
    found = load_directory(settings.agreements_dir or AGREEMENTS_DIR)
    return await publish_new_agreements(bootstrap, topics.agreements, found, history.hashes, settings.kafka_options())


async def run_worker(settings: Settings, bootstrap: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    published = await load_agreements(settings, bootstrap)
    log.info("%d new agreement version(s) loaded", published)
    processors = [
        build_accept_processor(settings, bootstrap),
        build_decide_processor(settings, bootstrap),
        build_audit_processor(settings, bootstrap),
    ]
    if settings.instance_id == "0":
        processors.append(build_correlate_processor(settings, bootstrap))
    log.info("worker %s running %d stage(s) on %s", settings.instance_id, len(processors), bootstrap)
    tasks = [asyncio.create_task(p.run(stop)) for p in processors]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    log.info("worker %s stopped", settings.instance_id)
