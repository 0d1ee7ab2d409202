"""An event log in memory: the twin of the Kafka adapter (adapters/kafka/log.py) behind domain/log.py's ports.

Topics of partitions of records; transactions whose commit and abort markers take an offset, as on Kafka;
readers that see committed records only, and stop at the first transaction still open; consumer groups'
committed positions; fact feeds; and a transactional runner for a stage's handler. It exists so that a
stage handler can be unit-tested as a worker runs it, restarts and aborted batches included, without a
broker. tests/integration/test_log_contract.py holds it and the Kafka adapter to the same answers.

What it does not model: several members of one consumer group (a runner owns every partition of its
inputs), broker failures, and time passing inside a transaction.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from domain.log import (
    LOG_APPEND_TIME,
    BatchHandler,
    LogRecord,
    Output,
    Publisher,
    RawRecord,
    Record,
    Stop,
    TopicPartition,
    TopicSpec,
    UnsettledTopic,
)
from schemas.codec import CodecError, WireCodec

log = logging.getLogger(__name__)
POLL_S = 0.005
SETTLE_TIMEOUT_S = 30.0


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Entry:
    """One offset of a partition: a record, or a transaction's commit or abort marker (record None)."""

    record: Record | None
    transaction: int | None = None


@dataclass
class _Transaction:
    partitions: set[TopicPartition] = field(default_factory=set)
    state: str = "open"  # open, committed or aborted


class MemoryLog:
    """domain.log.EventLog in memory, over the topics of `specs`."""

    def __init__(
        self,
        specs: Iterable[TopicSpec],
        *,
        settle_timeout_s: float = SETTLE_TIMEOUT_S,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.settle_timeout_s = settle_timeout_s
        self.clock_ms = clock_ms
        self._entries: dict[TopicPartition, list[_Entry]] = {
            TopicPartition(spec.name, p): [] for spec in self.specs.values() for p in range(spec.partitions)
        }
        self._transactions: dict[int, _Transaction] = {}
        self._ids = itertools.count(1)
        self._round_robin: dict[str, itertools.count[int]] = {}
        self.groups: dict[str, dict[TopicPartition, int]] = {}

    # -- writing --------------------------------------------------------------------------------
    def partitions_of(self, topic: str) -> list[TopicPartition]:
        if topic not in self.specs:
            raise KeyError(f"topic {topic} does not exist in this log")
        return [TopicPartition(topic, p) for p in range(self.specs[topic].partitions)]

    def _partition_for(self, output: Output) -> TopicPartition:
        count = len(self.partitions_of(output.topic))
        if output.partition is not None:
            if not 0 <= output.partition < count:
                raise ValueError(f"{output.topic} has no partition {output.partition}")
            return TopicPartition(output.topic, output.partition)
        if output.key is not None:
            return TopicPartition(output.topic, zlib.crc32(output.key) % count)
        spread = self._round_robin.setdefault(output.topic, itertools.count())
        return TopicPartition(output.topic, next(spread) % count)

    def _append(self, output: Output, transaction: int | None) -> Record:
        tp = self._partition_for(output)
        entries = self._entries[tp]
        stamped = self.specs[output.topic].broker_time
        record = Record(
            tp.topic,
            tp.partition,
            len(entries),
            output.key,
            output.value,
            tuple(output.headers),
            self.clock_ms(),
            LOG_APPEND_TIME if stamped else 0,
        )
        entries.append(_Entry(record, transaction))
        return record

    def append(self, *outputs: Output) -> list[Record]:
        """Write records outside any transaction (a plain producer): visible at once."""
        return [self._append(output, None) for output in outputs]

    def transaction(self) -> MemoryTransaction:
        """A transaction of its own: its records stay invisible until it commits, and block readers meanwhile."""
        transaction_id = next(self._ids)
        self._transactions[transaction_id] = _Transaction()
        return MemoryTransaction(self, transaction_id)

    def _end(self, transaction_id: int, state: str) -> None:
        transaction = self._transactions[transaction_id]
        if transaction.state != "open":
            raise RuntimeError(f"transaction {transaction_id} already {transaction.state}")
        transaction.state = state
        for tp in sorted(transaction.partitions):
            self._entries[tp].append(_Entry(None, transaction_id))  # the marker takes an offset, as on Kafka

    # -- reading --------------------------------------------------------------------------------
    def end(self, tp: TopicPartition) -> int:
        """Every offset taken so far, markers and open transactions included (Kafka's high watermark)."""
        return len(self._entries[tp])

    def stable_end(self, tp: TopicPartition) -> int:
        """Where a read-committed reader stops: the first record of a transaction still open, else the end."""
        for offset, entry in enumerate(self._entries[tp]):
            if entry.transaction is not None and self._transactions[entry.transaction].state == "open":
                return offset
        return self.end(tp)

    def committed_records(self, tp: TopicPartition, start: int, stop: int) -> list[Record]:
        """The committed records of [start, stop), in offset order."""
        out = []
        for entry in self._entries[tp][start:stop]:
            if entry.record is None:
                continue
            if entry.transaction is None or self._transactions[entry.transaction].state == "committed":
                out.append(entry.record)
        return out

    def records(self, topic: str) -> list[Record]:
        """Every committed record of `topic` up to its stable end, partition by partition."""
        return [r for tp in self.partitions_of(topic) for r in self.committed_records(tp, 0, self.stable_end(tp))]

    def values(self, topic: str, expect: str | None = None) -> list[dict[str, Any]]:
        """The committed values of `topic`, decoded; values that are not `expect` (or not Avro) skipped."""
        codec, out = WireCodec(), []
        for record in self.records(topic):
            try:
                out.append(codec.decode(record.value, expect=expect)[1])
            except CodecError:
                continue
        return out

    # -- TopicIO: whole topics read and records written by the hub's operations -----------------------
    async def read_partitions(self, topic: str, partitions: int) -> dict[int, list[RawRecord]]:
        return {
            tp.partition: [(r.offset, r.value) for r in self.committed_records(tp, 0, self.stable_end(tp))]
            for tp in self.partitions_of(topic)[:partitions]
        }

    async def read_decoded(self, topic: str, partitions: int, expect: str | None = None) -> list[dict[str, Any]]:
        return self.values(topic, expect)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[Publisher]:
        yield MemoryPublisher(self)

    async def _stable_at(self, tps: Iterable[TopicPartition], offsets: Mapping[TopicPartition, int]) -> None:
        """Wait until a read-committed reader sees every partition up to `offsets` (as a Kafka reader waits)."""
        deadline = asyncio.get_running_loop().time() + self.settle_timeout_s
        while any(self.stable_end(tp) < offsets[tp] for tp in tps):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("a transaction below the offsets to read stayed open")
            await asyncio.sleep(POLL_S)

    # -- Restore --------------------------------------------------------------------------------
    @asynccontextmanager
    async def reading(self) -> AsyncIterator[MemoryReader]:
        yield MemoryReader(self)

    async def committed(self, group_id: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        offsets = self.groups.get(group_id, {})
        return {TopicPartition(tp.topic, tp.partition): offsets.get(tp, 0) for tp in partitions}

    # -- FactFeeds ------------------------------------------------------------------------------
    def feed(self, handlers: Mapping[str, Callable[[dict[str, Any]], None]]) -> MemoryFeed:
        return MemoryFeed(self, handlers)

    # -- TopicConfigs ---------------------------------------------------------------------------
    async def broker_stamps(self, topic: str) -> bool:
        return self.specs[topic].broker_time

    # -- Transactions ---------------------------------------------------------------------------
    def processor(
        self,
        *,
        group_id: str,
        instance_id: str,
        input_topic: str,
        handler: BatchHandler,
        also_from: Sequence[str] = (),
    ) -> MemoryProcessor:
        return MemoryProcessor(
            self,
            group_id=group_id,
            instance_id=instance_id,
            input_topic=input_topic,
            handler=handler,
            also_from=also_from,
        )


class MemoryPublisher:
    def __init__(self, log: MemoryLog) -> None:
        self.log = log

    async def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        self.log.append(Output(topic, key, value, partition=partition))


class MemoryTransaction:
    def __init__(self, log: MemoryLog, transaction_id: int) -> None:
        self.log = log
        self.id = transaction_id

    def send(self, output: Output) -> Record:
        record = self.log._append(output, self.id)
        self.log._transactions[self.id].partitions.add(TopicPartition(record.topic, record.partition))
        return record

    def commit(self, offsets: Mapping[str, Mapping[TopicPartition, int]] | None = None) -> None:
        """Commit the records sent and, in the same step, these consumer groups' positions."""
        self.log._end(self.id, "committed")
        for group, positions in (offsets or {}).items():
            self.log.groups.setdefault(group, {}).update(positions)

    def abort(self) -> None:
        self.log._end(self.id, "aborted")


class MemoryReader:
    def __init__(self, log: MemoryLog) -> None:
        self.log = log

    async def settled_ends(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        written = {tp: self.log.end(tp) for tp in partitions}
        try:
            await self.log._stable_at(partitions, written)
        except TimeoutError:
            open_at = {f"{tp.topic}[{tp.partition}]": self.log.stable_end(tp) for tp in partitions}
            raise UnsettledTopic(
                f"transactions still open at {open_at} after {self.log.settle_timeout_s:.0f}s"
            ) from None
        return {TopicPartition(tp.topic, tp.partition): self.log.stable_end(tp) for tp in partitions}

    async def read(
        self, stop_at: Mapping[TopicPartition, int], start_at: Mapping[TopicPartition, int] | None = None
    ) -> list[LogRecord]:
        start_at = start_at or {}
        await self.log._stable_at(stop_at, stop_at)
        records: list[LogRecord] = []
        for tp, stop in stop_at.items():
            records += self.log.committed_records(tp, start_at.get(tp, 0), stop)
        return records


class MemoryFeed:
    def __init__(self, log: MemoryLog, handlers: Mapping[str, Callable[[dict[str, Any]], None]]) -> None:
        self.log = log
        self.topics = list(handlers)
        self.handlers = dict(handlers)
        self.codec = WireCodec()
        self._positions: dict[TopicPartition, int] | None = None

    async def start(self) -> None:
        if self._positions is not None:
            return
        self._positions = {tp: 0 for topic in self.topics for tp in self.log.partitions_of(topic)}
        await self.catch_up()

    async def catch_up(self) -> int:
        assert self._positions is not None, "start() first"
        applied = 0
        for tp, position in self._positions.items():
            end = self.log.stable_end(tp)
            for record in self.log.committed_records(tp, position, end):
                try:
                    _, value = self.codec.decode(record.value)
                except CodecError:
                    continue
                self.handlers[tp.topic](value)
                applied += 1
            self._positions[tp] = end
        return applied

    async def stop(self) -> None:
        pass


class InjectedFault(RuntimeError):
    """A batch's transaction made to fail after its outputs were sent (MemoryProcessor.fail_next_batches)."""


class MemoryProcessor:
    """A stage's transactional runner in memory (the Kafka one: adapters/kafka/transactional.py): each batch's
    outputs and the group's new positions commit together; a failed batch is aborted and read again."""

    def __init__(
        self,
        log: MemoryLog,
        *,
        group_id: str,
        instance_id: str,
        input_topic: str,
        handler: BatchHandler,
        also_from: Sequence[str] = (),
        max_records: int = 500,
        max_consecutive_failures: int = 20,
    ) -> None:
        self.log = log
        self.group_id = group_id
        self.instance_id = instance_id
        self.input_topic = input_topic
        self.also_from = list(also_from)
        self.handler = handler
        self.max_records = max_records
        self.max_consecutive_failures = max_consecutive_failures
        self.batches = 0
        self.records = 0
        self.aborts = 0
        self._positions: dict[TopicPartition, int] | None = None
        self._failures = 0
        self._faults = 0

    @property
    def partitions(self) -> list[TopicPartition]:
        return [tp for topic in [self.input_topic, *self.also_from] for tp in self.log.partitions_of(topic)]

    def fail_next_batches(self, count: int = 1) -> None:
        """The next `count` batches fail after their outputs were sent, as on a crash before the commit."""
        self._faults += count

    async def assign(self) -> None:
        """Take every partition of the inputs, from where the group committed (idempotent)."""
        if self._positions is not None:
            return
        committed = await self.log.committed(self.group_id, self.partitions)
        self._positions = dict(committed)
        try:
            await self.handler.on_assigned(set(self._positions))
        except Exception as exc:  # as the Kafka runner: the first batch restores anyway
            log.warning("restoring state at assignment failed (%s); the first batch restores it", type(exc).__name__)

    def revoke(self) -> None:
        """Give every partition up, as in a rebalance; the next step takes them again."""
        if self._positions is not None:
            self.handler.on_revoked(set(self._positions))
            self._positions = None

    async def step(self) -> int:
        """Process one batch, or tick when there is none. Returns how many input records were processed."""
        await self.assign()
        assert self._positions is not None
        batch: list[Record] = []
        moved: dict[TopicPartition, int] = {}
        for tp, position in self._positions.items():
            room = self.max_records - len(batch)
            end = self.log.stable_end(tp)
            records = self.log.committed_records(tp, position, end)
            if len(records) > room:
                records = records[:room]
                end = records[-1].offset + 1 if records else position
            batch += records
            if end > position:
                moved[tp] = end  # the position, stepped over markers and aborted records as a Kafka consumer's
        if not batch:
            if moved:  # only markers or aborted records moved: commit the positions (the lag reaches 0)
                self.log.groups.setdefault(self.group_id, {}).update(moved)
                self._positions.update(moved)
            await self._tick()
            return 0
        transaction = self.log.transaction()
        try:
            outputs = await self.handler.handle(batch)
            landed = [transaction.send(output) for output in outputs]
            if self._faults:
                self._faults -= 1
                raise InjectedFault("the batch's transaction failed before its commit")
            transaction.commit({self.group_id: moved})
        except Exception:
            transaction.abort()
            self.aborts += 1
            self._failures += 1
            self.handler.aborted()
            self._positions.update(await self.log.committed(self.group_id, list(moved)))  # read it again
            if self._failures >= self.max_consecutive_failures:
                raise
            return 0
        self._failures = 0
        self._positions.update(moved)
        self._written_at(landed)
        self.handler.committed()
        self.batches += 1
        self.records += len(batch)
        return len(batch)

    async def _tick(self) -> None:
        """As the Kafka runner when idle: what the handler writes because time passed, in its own transaction."""
        tick = getattr(self.handler, "tick", None)
        if tick is None:
            return
        try:
            outputs = await tick()
        except Exception as exc:
            log.warning("idle tick aborted (%s); trying again", type(exc).__name__)
            self.handler.aborted()
            return
        if not outputs:
            return
        transaction = self.log.transaction()
        landed = [transaction.send(output) for output in outputs]
        transaction.commit()
        self._written_at(landed)
        self.handler.committed()

    def _written_at(self, landed: list[Record]) -> None:
        hook = getattr(self.handler, "written", None)
        if hook is not None:
            hook([(TopicPartition(r.topic, r.partition), r.offset) for r in landed])

    async def drain(self) -> int:
        """Process batches until none is left; returns how many records were processed."""
        total = 0
        while True:
            processed = await self.step()
            total += processed
            if processed == 0 and self._failures == 0:
                return total

    async def run(self, stop: Stop) -> None:
        try:
            while not stop.is_set():
                if await self.step() == 0:
                    await asyncio.sleep(POLL_S)
        finally:
            await self.handler.close()

    async def close(self) -> None:
        await self.handler.close()
