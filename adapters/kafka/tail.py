"""The gateway's Kafka clients: the tail that feeds its folds, the producer of the events and audit
events it writes, and the stages' lag. The gateway itself imports no broker client: its folds see a
`domain.log.Record`, its routes a `domain.log.Publisher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import OffsetOutOfRangeError

from adapters.kafka.kafka_clients import stop_consumer
from domain.log import Record
from domain.read_models import ReadModels, record_digest
from streams.topics import Topics

log = logging.getLogger("tiphub.gateway.tail")
VERIFY_TIMEOUT_S = 10.0  # to read back each partition's last folded record at start
EXPIRY_SWEEP_S = 30.0  # how often decided views past their retention are dropped from the read models
T = TypeVar("T")


class KafkaPublisher:
    """The gateway's one producer: idempotent, each record acknowledged by every in-sync replica."""

    def __init__(self, bootstrap: str, client_options: dict[str, Any] | None = None) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", **(client_options or {})
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        await self.producer.send_and_wait(topic, value, key=key, partition=partition)


class Tail:
    """Reads every partition of the tailed topics from where the read models stand (their beginning, for a
    new store) and hands each batch to the read models, folded on a thread of its own, for as long as the
    gateway runs; `ready` is set once it has read to the ends it found at start.

    A store that stands beyond a topic's end was not built from these topics (recreated by a rebuild, or
    another cluster): it is wiped and built again from the beginnings."""

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        tailed: Sequence[str],
        views: ReadModels,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.tailed = tuple(tailed)
        self.views = views
        self.options = client_options or {}
        self.folder = ThreadPoolExecutor(1, thread_name_prefix="read-models")
        self.folded = 0  # records folded since this start
        self.read_at_start = 0  # of which before `ready`: what was written while the gateway was down
        self.changed = asyncio.Condition()  # notified after each batch folded
        self.ready = asyncio.Event()
        self._ends: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="none",  # a position out of range is a topic recreated: rebuild, never skip to its end
            **self.options,
        )
        await self._consumer.start()
        # the contract's count, not a guess: Apache Kafka never answers for a partition that does not
        # exist (tip.coverage has one), and a seek to it waits forever
        tps = [TopicPartition(topic, p) for topic in self.tailed for p in range(self.topics.partitions_of(topic))]
        self._ends = await self._consumer.end_offsets(tps)
        beginnings = await self._consumer.beginning_offsets(tps)
        stored = await self._fold(self.views.positions)
        ahead = [tp for tp in tps if stored.get((tp.topic, tp.partition), 0) > self._ends[tp]]
        changed = [] if ahead else await self._not_holding(tps, beginnings)
        if ahead or changed:
            named = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in (ahead or changed)[:5])
            why = "stand beyond the end of" if ahead else "last folded records that are no longer in"
            log.warning("read models %s %s: rebuilding them from the topics' beginnings", why, named)
            await self._fold(self.views.wipe)
            stored = {}
        # assigned and placed with no await between: with no reset policy, the fetcher must never find a
        # partition without a position
        self._consumer.assign(tps)
        for tp in tps:
            self._consumer.seek(tp, max(stored.get((tp.topic, tp.partition), 0), beginnings[tp]))
        self._task = asyncio.create_task(self._tail())

    async def _not_holding(
        self, tps: list[TopicPartition], beginnings: dict[TopicPartition, int]
    ) -> list[TopicPartition]:
        """The partitions that no longer hold, at its offset, the last record the store folded from them: the
        topic was deleted and created again under its name (and may have grown past the store's position
        since). A record retention has deleted since cannot be checked, and is not held against the store."""
        assert self._consumer is not None
        last = await self._fold(self.views.last_folded)
        check = {
            tp: last[(tp.topic, tp.partition)]
            for tp in tps
            if (tp.topic, tp.partition) in last and last[(tp.topic, tp.partition)][0] >= beginnings[tp]
        }
        if not check:
            return []
        self._consumer.assign(list(check))
        for tp, (offset, _) in check.items():
            self._consumer.seek(tp, offset)
        found: dict[TopicPartition, str] = {}
        deadline = asyncio.get_running_loop().time() + VERIFY_TIMEOUT_S
        while len(found) < len(check) and asyncio.get_running_loop().time() < deadline:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=len(check))
            for tp, records in batch.items():
                if tp in check and tp not in found and records:
                    first = records[0]
                    found[tp] = record_digest(first.value) if first.offset == check[tp][0] else "another offset"
        return [tp for tp, (_, digest) in check.items() if found.get(tp) != digest]

    async def _fold(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.folder, call, *args)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await stop_consumer(self._consumer)
        self.folder.shutdown(wait=True)

    async def _tail(self) -> None:
        assert self._consumer is not None
        loop = asyncio.get_running_loop()
        swept = 0.0
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=2000)
            except OffsetOutOfRangeError:
                await self._rebuild_recreated()
                continue
            records = [
                Record(r.topic, r.partition, r.offset, r.key, r.value, (), r.timestamp)
                for tp in sorted(batch, key=lambda tp: (tp.topic, tp.partition))
                for r in batch[tp]
            ]
            if records:
                try:
                    await self._fold(self.views.apply, records)
                except Exception as exc:  # the store away (a PostgreSQL restart, a full disk): read the batch again
                    log.error("folding %d records failed (%s); reading them again", len(records), type(exc).__name__)
                    for tp, held in batch.items():
                        self._consumer.seek(tp, held[0].offset)
                    await asyncio.sleep(1.0)
                    continue
                self.folded += len(records)
            if loop.time() - swept >= EXPIRY_SWEEP_S:
                swept = loop.time()
                try:
                    expired = await self._fold(self.views.expire, datetime.now(UTC))
                except Exception as exc:
                    log.error(
                        "the retention sweep of the read models failed (%s); trying again later", type(exc).__name__
                    )
                    expired = 0
                if expired:
                    log.info("retention: %d decided views past their retention dropped from the read models", expired)
            if not self.ready.is_set():
                positions = {tp: await self._consumer.position(tp) for tp in self._ends}
                if all(positions[tp] >= end for tp, end in self._ends.items()):
                    self.read_at_start = self.folded
                    log.info("read models caught up: %d records read since they stood", self.folded)
                    self.ready.set()
            if batch:
                async with self.changed:
                    self.changed.notify_all()

    async def _rebuild_recreated(self) -> None:
        """A position out of range while running: a topic was deleted and created again. What the store holds
        of the old topics is not these topics' history: wipe it and read every topic from its beginning."""
        assert self._consumer is not None
        log.warning("a tailed topic was recreated while the gateway ran: rebuilding the read models from the topics")
        await self._fold(self.views.wipe)
        tps = list(self._ends)
        beginnings = await self._consumer.beginning_offsets(tps)
        for tp in tps:
            self._consumer.seek(tp, beginnings[tp])

    async def caught_up(self) -> bool:
        """Whether every tailed partition has been read to its end as of now (readiness)."""
        assert self._consumer is not None
        tps = list(self._ends)
        ends = await self._consumer.end_offsets(tps)
        for tp in tps:
            if await self._consumer.position(tp) < ends[tp]:
                return False
        return True

    async def until(self, done: Callable[[], bool], timeout_s: float = 15.0) -> None:
        """Wait (up to `timeout_s`) until `done()` holds after a batch folded: read your writes."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(done), timeout_s)

    async def next_batch(self, timeout_s: float) -> None:
        """Wait until the next batch is folded, or `timeout_s`, whichever comes first."""
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=timeout_s)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert self._consumer is not None
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(tps)
        return ends


class StageLag:
    """Records each stream stage has not committed yet (the same measure the tests wait on)."""

    def __init__(self, bootstrap: str, topics: Topics, tail: Tail, client_options: dict[str, Any] | None = None):
        self.bootstrap = bootstrap
        self.topics = topics
        self.tail = tail
        self.options = client_options or {}

    async def measure(self, group_of: Callable[[str], str]) -> dict[str, int]:
        inputs = {
            stage: [TopicPartition(topic, p) for topic, partitions in topics for p in partitions]
            for stage, topics in self.topics.stage_inputs().items()
        }
        ends = await self.tail.end_offsets(sorted({tp for tps in inputs.values() for tp in tps}))
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.options)
        await admin.start()  # one client for every group: on Apache Kafka each start costs a round of metadata
        try:
            out = {}
            for stage, tps in inputs.items():
                committed = await admin.list_consumer_group_offsets(group_of(stage))
                out[stage] = sum(max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in tps)
            return out
        finally:
            await admin.close()
