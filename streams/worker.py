"""`tiphub worker`: assemble the stream stages from settings and run them until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal

from schemas.codec import WireCodec
from streams.accept import AcceptStage
from streams.agents.accept_reports import AcceptReports
from streams.topics import Topics
from streams.transactional import TransactionalProcessor
from tiphub.database import Database
from tiphub.keys import KeyRegistry, KeyStore
from tiphub.linkage import Linker
from tiphub.settings import Settings
from tiphub.vault import SqlKeyVault

log = logging.getLogger(__name__)


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


async def run_worker(settings: Settings, bootstrap: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    processors = [build_accept_processor(settings, bootstrap)]
    log.info("worker %s running %d stage(s) on %s", settings.instance_id, len(processors), bootstrap)
    tasks = [asyncio.create_task(p.run(stop)) for p in processors]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    log.info("worker %s stopped", settings.instance_id)
