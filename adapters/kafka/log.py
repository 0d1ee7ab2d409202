"""The event-log ports (domain/log.py) on Kafka: restores, fact feeds, topic configs and transactional stages,
all from one connection (bootstrap, client options, broker kind) built once by the worker."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaPartition
from aiokafka.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError, NotCoordinatorForGroupError

from adapters.kafka.broker_quirks import BrokerQuirks, detect_kind, quirks_for
from adapters.kafka.embedded import broker_stamps
from adapters.kafka.feeds import (
    SETTLE_TIMEOUT_S,
    TopicFeed,
    committed_offsets,
    end_offsets,
    read_until,
    settled_end_offsets,
)
from adapters.kafka.kafka_clients import stop_consumer
from adapters.kafka.transactional import TransactionalProcessor
from domain.log import BatchHandler, LogRecord, TopicPartition

log = logging.getLogger(__name__)
COORDINATOR_MOVING = (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorForGroupError)
COORDINATOR_ATTEMPTS = 20  # about 10 s
READER_FETCH_WAIT_MS = 20  # a restore's reader: no long polls (KafkaLog.reading)


def _kafka(partitions: Sequence[TopicPartition]) -> list[KafkaPartition]:
    return [KafkaPartition(tp.topic, tp.partition) for tp in partitions]


def _ours(offsets: Mapping[KafkaPartition, int]) -> dict[TopicPartition, int]:
    return {TopicPartition(tp.topic, tp.partition): offset for tp, offset in offsets.items()}


class KafkaReader:
    """A LogReader over one read-committed consumer outside any group."""

    def __init__(self, log: KafkaLog, consumer: AIOKafkaConsumer) -> None:
        self.log = log
        self.consumer = consumer

    async def settled_ends(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        ends = await settled_end_offsets(
            self.log.bootstrap, self.consumer, _kafka(partitions), self.log.options, self.log.settle_timeout_s
        )
        return _ours(ends)

    async def read(
        self, stop_at: Mapping[TopicPartition, int], start_at: Mapping[TopicPartition, int] | None = None
    ) -> list[LogRecord]:
        if not stop_at:
            return []
        start_at = start_at or {}
        ours = list(stop_at)
        tps = _kafka(ours)
        self.consumer.assign(tps)
        from_beginning = [tp for tp, partition in zip(tps, ours, strict=True) if partition not in start_at]
        if from_beginning:
            await self.consumer.seek_to_beginning(*from_beginning)
        for tp, partition in zip(tps, ours, strict=True):
            if partition in start_at:
                self.consumer.seek(tp, start_at[partition])
        stop = {tp: stop_at[partition] for tp, partition in zip(tps, ours, strict=True)}
        records: list[LogRecord] = await read_until(self.consumer, tps, stop)
        # Read up to where it was asked: no fetching on past it while the restore goes on (a correlator's replay
        # keeps its reader for minutes); the next read's assign() takes them up again.
        self.consumer.pause(*tps)
        return records


class KafkaLog:
    """domain.log.EventLog on a Kafka broker. `kind`: the broker's kind if known (else asked of the broker
    when a processor is built), for its quirks (adapters/kafka/broker_quirks.py)."""

    def __init__(
        self,
        bootstrap: str,
        client_options: dict[str, Any] | None = None,
        kind: str | None = None,
        *,
        settle_timeout_s: float = SETTLE_TIMEOUT_S,
    ) -> None:
        self.bootstrap = bootstrap
        self.options = client_options or {}
        self.kind = kind
        self.settle_timeout_s = settle_timeout_s

    # -- Restore ------------------------------------------------------------------------------
    @asynccontextmanager
    async def reading(self) -> AsyncIterator[KafkaReader]:
        """A reader for bounded reads (a restore: up to ends it knows). Its fetches wait at most
        READER_FETCH_WAIT_MS for data: a read moves from partition to partition, and the next one's fetch
        cannot go out while a long poll at the end of the last one is in flight to the same broker (up to
        aiokafka's 500 ms default, seen at 0.2 s a partition on every restart)."""
        options = {"fetch_max_wait_ms": READER_FETCH_WAIT_MS, **self.options}
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, isolation_level="read_committed", **options
        )
        await consumer.start()
        try:
            yield KafkaReader(self, consumer)
        finally:
            # A reader that read nothing (a restore whose checkpoint is at the end) stops right after it
            # started: aiokafka then cancels its group-less coordinator's task before that task ever ran, and
            # stop() raises CancelledError, which ended a worker. One turn of the loop lets the task start.
            await asyncio.sleep(0)
            await stop_consumer(consumer)

    async def committed(self, group_id: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        for attempt in itertools.count(1):
            try:
                return _ours(await committed_offsets(self.bootstrap, group_id, _kafka(partitions), self.options))
            except COORDINATOR_MOVING as exc:
                # A fresh Apache Kafka creates its offsets topic on the first group lookup, and a coordinator
                # moves with its partition's leader: the group's commits are there, only not answered yet.
                if attempt >= COORDINATOR_ATTEMPTS:
                    raise
                log.info("group %s: %s; asking again", group_id, type(exc).__name__)
                await asyncio.sleep(0.5)
        raise AssertionError("unreachable")

    # -- FactFeeds ----------------------------------------------------------------------------
    def feed(self, handlers: Mapping[str, Callable[[dict[str, Any]], None]]) -> TopicFeed:
        return TopicFeed(self.bootstrap, handlers, self.options)

    # -- TopicConfigs -------------------------------------------------------------------------
    async def broker_stamps(self, topic: str) -> bool:
        return await asyncio.to_thread(broker_stamps, self.bootstrap, topic, **self.options)

    # -- Transactions -------------------------------------------------------------------------
    def quirks(self) -> BrokerQuirks:
        return quirks_for(self.kind or detect_kind(self.bootstrap, **self.options))

    def processor(
        self,
        *,
        group_id: str,
        instance_id: str,
        input_topic: str,
        handler: BatchHandler,
        also_from: Sequence[str] = (),
    ) -> TransactionalProcessor:
        return TransactionalProcessor(
            bootstrap=self.bootstrap,
            group_id=group_id,
            instance_id=instance_id,
            input_topic=input_topic,
            handler=handler,
            client_options=self.options,
            also_from=list(also_from),
            quirks=self.quirks(),
        )

    # -- for the worker's own bookkeeping ---------------------------------------------------------
    async def stable_ends(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The current end of these partitions as a read-committed reader sees it (no waiting for open
        transactions, unlike a LogReader's settled_ends)."""
        return _ours(await end_offsets(self.bootstrap, _kafka(partitions), self.options))
