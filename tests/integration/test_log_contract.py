"""One contract for the event-log ports (domain/log.py): the Kafka adapter on the session's broker, and the
in-memory twin the stage handlers' unit tests run on. Each test states what a stage relies on."""

from __future__ import annotations

import asyncio
import functools
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.kafka.embedded import ensure_topics, with_admin
from adapters.kafka.log import KafkaLog
from adapters.kafka.producer import new_producer
from adapters.kafka.topic_io import KafkaTopicIO
from adapters.memory.log import MemoryLog
from domain.log import EventLog, Output, TopicIO, TopicPartition, TopicSpec, UnsettledTopic
from schemas.codec import WireCodec
from streams.audit_events import AUDIT_EVENT, audit_event
from tests.harness import broker_kind

pytestmark = pytest.mark.integration
SETTLE_S = 2.0  # how long a reader waits for an open transaction in these tests (a stage waits 30 s)
CODEC = WireCodec()


class Pending:
    """A transaction left open by the test, to end later."""

    def __init__(self, commit: Callable[[], Awaitable[None]], abort: Callable[[], Awaitable[None]]) -> None:
        self.commit, self.abort = commit, abort


@dataclass
class Backend:
    log: EventLog
    source: str  # two partitions
    sink: str  # two partitions
    stamped: str  # one partition, LogAppendTime
    append: Callable[..., Awaitable[None]]
    begin: Callable[..., Awaitable[Pending]]  # a transaction with these outputs, still open
    cleanup: Callable[[], Awaitable[None]]  # in the test's event loop: what a failed test left open
    topic_io: TopicIO  # what the hub's operations read and write through

    async def committed(self, *outputs: Output) -> None:
        await (await self.begin(*outputs)).commit()

    async def aborted(self, *outputs: Output) -> None:
        await (await self.begin(*outputs)).abort()


def _specs(prefix: str) -> list[TopicSpec]:
    return [
        TopicSpec(f"{prefix}source", 2, -1),
        TopicSpec(f"{prefix}sink", 2, -1),
        TopicSpec(f"{prefix}stamped", 1, -1, broker_time=True),
    ]


def _memory() -> Backend:
    log = MemoryLog(_specs("m."), settle_timeout_s=SETTLE_S)

    async def append(*outputs: Output) -> None:
        log.append(*outputs)

    async def begin(*outputs: Output) -> Pending:
        transaction = log.transaction()
        for output in outputs:
            transaction.send(output)

        async def commit() -> None:
            transaction.commit()

        async def abort() -> None:
            transaction.abort()

        return Pending(commit, abort)

    async def cleanup() -> None:
        pass

    return Backend(log, "m.source", "m.sink", "m.stamped", append, begin, cleanup, log)


async def _send(producer: Any, o: Output) -> None:
    await producer.send_and_wait(o.topic, o.value, key=o.key, partition=o.partition, headers=list(o.headers))


@dataclass
class _Broker:
    bootstrap: str
    producers: list[Any] = field(default_factory=list)

    async def append(self, *outputs: Output) -> None:
        producer = new_producer(self.bootstrap)
        await producer.start()
        try:
            for output in outputs:
                await _send(producer, output)
        finally:
            await producer.stop()

    async def begin(self, *outputs: Output) -> Pending:
        producer = new_producer(self.bootstrap, {"transactional_id": f"contract-{uuid.uuid4().hex[:8]}"})
        await producer.start()
        self.producers.append(producer)
        await producer.begin_transaction()
        for output in outputs:
            await _send(producer, output)

        async def commit() -> None:
            await producer.commit_transaction()
            await producer.stop()

        async def abort() -> None:
            await producer.abort_transaction()
            await producer.stop()

        return Pending(commit, abort)

    async def cleanup(self) -> None:
        for producer in self.producers:
            await producer.stop()


@pytest.fixture(params=["memory", pytest.param("broker", marks=pytest.mark.noida)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield _memory()
        return
    bootstrap = request.getfixturevalue("broker")
    prefix = f"contract-{uuid.uuid4().hex[:8]}."
    specs = _specs(prefix)
    ensure_topics(bootstrap, specs, 1)
    kind = broker_kind() if broker_kind() in ("kafka", "noida") else None
    broker = _Broker(bootstrap)
    log = KafkaLog(bootstrap, kind=kind, settle_timeout_s=SETTLE_S)
    try:
        yield Backend(
            log,
            f"{prefix}source",
            f"{prefix}sink",
            f"{prefix}stamped",
            broker.append,
            broker.begin,
            broker.cleanup,
            KafkaTopicIO(bootstrap),
        )
    finally:
        with_admin(bootstrap, lambda admin: admin.delete_topics([s.name for s in specs]))


def contract(scenario: Callable[[Backend], Awaitable[None]]) -> Callable[[Backend], None]:
    """A test of the contract, run on each backend in an event loop of its own."""

    @functools.wraps(scenario)
    def test(backend: Backend) -> None:
        async def main() -> None:
            try:
                await scenario(backend)
            finally:
                await backend.cleanup()

        asyncio.run(main())

    return test


def record(topic: str, partition: int, text: str, headers: tuple[tuple[str, bytes], ...] = ()) -> Output:
    return Output(topic, f"k-{text}".encode(), text.encode(), partition=partition, headers=headers)


def fact(item_id: str) -> bytes:
    return CODEC.encode(AUDIT_EVENT, audit_event("decision", "contract", "shared", item_id=item_id))


Written = dict[int, list[tuple[bytes | None, bytes | None]]]  # partition -> (key, value) in log order


async def read_all(log: EventLog, topic: str, partitions: int = 2) -> Written:
    """Every committed record of `topic`, read back as a restoring stage reads its own output."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    async with log.reading() as reader:
        records = await reader.read(await reader.settled_ends(tps))
    out: Written = {p: [] for p in range(partitions)}
    for r in records:
        out[r.partition].append((r.key, r.value))
    return out


async def eventually(condition: Callable[[], Awaitable[bool]], what: str, limit_s: float = 90.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


# -- Restore: a stage rebuilding its state ---------------------------------------------------------
@contract
async def test_a_restore_reads_every_committed_record_in_log_order_and_no_aborted_one(backend: Backend) -> None:
    s = backend.source
    await backend.append(record(s, 0, "a", (("agency", b"NZ-POLICE"),)), record(s, 0, "b"), record(s, 1, "x"))
    await backend.committed(record(s, 0, "c"), record(s, 1, "y"))
    await backend.aborted(record(s, 0, "never"), record(s, 1, "never"))
    await backend.append(record(s, 0, "d"))

    read = await read_all(backend.log, s)

    assert [v for _, v in read[0]] == [b"a", b"b", b"c", b"d"]
    assert [v for _, v in read[1]] == [b"x", b"y"]
    assert read[0][0][0] == b"k-a"
    async with backend.log.reading() as reader:
        [first] = await reader.read({TopicPartition(s, 0): 1})
    assert (first.topic, first.partition, first.offset, first.value) == (s, 0, 0, b"a")
    assert list(first.headers) == [("agency", b"NZ-POLICE")]


@contract
async def test_a_restore_can_read_back_from_an_offset(backend: Backend) -> None:
    """What the chaining stage does to find its head: read a partition's tail, not all of it."""
    s = backend.source
    await backend.append(*(record(s, 0, str(i)) for i in range(6)))
    tp = TopicPartition(s, 0)
    async with backend.log.reading() as reader:
        ends = await reader.settled_ends([tp])
        tail = await reader.read(ends, start_at={tp: 4})
        middle = await reader.read({tp: 3}, start_at={tp: 1})
    assert ends == {tp: 6}
    assert [(r.offset, r.value) for r in tail] == [(4, b"4"), (5, b"5")]
    assert [r.value for r in middle] == [b"1", b"2"]


@contract
async def test_a_restore_waits_for_a_transaction_still_open_below_the_end(backend: Backend) -> None:
    """A stage restoring from its own output must not miss what a transaction still completing will show."""
    s = backend.source
    await backend.append(record(s, 0, "before"))
    pending = await backend.begin(record(s, 0, "in-flight"))
    await backend.append(record(s, 1, "elsewhere"))
    tps = [TopicPartition(s, 0), TopicPartition(s, 1)]
    async with backend.log.reading() as reader:
        with pytest.raises(UnsettledTopic):
            await reader.settled_ends(tps)
    await pending.commit()

    read = await read_all(backend.log, s)

    assert [v for _, v in read[0]] == [b"before", b"in-flight"]
    assert [v for _, v in read[1]] == [b"elsewhere"]


@contract
async def test_a_group_that_never_committed_starts_at_zero(backend: Backend) -> None:
    tps = [TopicPartition(backend.source, 0), TopicPartition(backend.source, 1)]
    assert await backend.log.committed(f"never-{uuid.uuid4().hex[:6]}", tps) == dict.fromkeys(tps, 0)


# -- FactFeeds: agreements, erasures, retractions ------------------------------------------------------
@contract
async def test_a_fact_feed_applies_each_committed_fact_once_and_skips_what_is_not_the_hubs(backend: Backend) -> None:
    s = backend.source
    await backend.append(Output(s, None, fact("one"), partition=0), Output(s, None, b"not avro", partition=1))
    await backend.aborted(Output(s, None, fact("aborted"), partition=0))
    seen: list[str] = []
    feed = backend.log.feed({s: lambda value: seen.append(value["item_id"])})
    await feed.start()
    try:
        assert seen == ["one"]
        await backend.committed(Output(s, None, fact("two"), partition=1))
        await backend.append(Output(s, None, fact("three"), partition=0))
        assert await feed.catch_up() == 2
        assert sorted(seen) == ["one", "three", "two"]
        assert await feed.catch_up() == 0
    finally:
        await feed.stop()


# -- TopicConfigs -------------------------------------------------------------------------------------
@contract
async def test_only_a_log_append_time_topic_counts_as_stamped_by_the_broker(backend: Backend) -> None:
    assert await backend.log.broker_stamps(backend.stamped) is True
    assert await backend.log.broker_stamps(backend.source) is False


# -- Transactions: the transactional output ----------------------------------------------------------
@dataclass
class Echo:
    """A stage that writes each input upper-cased, to the same partition of `sink`; its first `failures`
    batches fail (as a batch does when the broker is away)."""

    sink: str
    failures: int = 0
    assigned: set[TopicPartition] = field(default_factory=set)
    batches: list[int] = field(default_factory=list)
    commits: int = 0
    aborts: int = 0
    closed: bool = False

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        self.assigned |= {TopicPartition(tp.topic, tp.partition) for tp in partitions}

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        pass

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        self.batches.append(len(records))
        if self.failures:
            self.failures -= 1
            raise RuntimeError("this batch fails")
        return [Output(self.sink, r.key, r.value.upper(), partition=r.partition) for r in records]

    def committed(self) -> None:
        self.commits += 1

    def aborted(self) -> None:
        self.aborts += 1

    async def close(self) -> None:
        self.closed = True


async def run_until(backend: Backend, handler: Echo, group: str, done: Callable[[], Awaitable[bool]]) -> None:
    runner = backend.log.processor(group_id=group, instance_id="0", input_topic=backend.source, handler=handler)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: _done_or_failed(task, done), "the stage to process its input")
    finally:
        stop.set()
        await task


async def _done_or_failed(task: asyncio.Task[None], done: Callable[[], Awaitable[bool]]) -> bool:
    if task.done():
        task.result()  # a runner that stopped says why
        raise AssertionError("the runner stopped")
    return await done()


@contract
async def test_a_stage_writes_each_output_once_though_a_batch_failed_and_resumes_where_its_group_committed(
    backend: Backend,
) -> None:
    s, group = backend.source, f"contract-{uuid.uuid4().hex[:6]}"
    tps = [TopicPartition(s, 0), TopicPartition(s, 1)]
    await backend.append(*(record(s, i % 2, f"r{i}") for i in range(10)))
    first = Echo(backend.sink, failures=1)

    async def through(count: int) -> bool:
        written = await read_all(backend.log, backend.sink)
        committed = await backend.log.committed(group, tps)
        async with backend.log.reading() as reader:
            ends = await reader.settled_ends(tps)
        return sum(map(len, written.values())) >= count and committed == ends

    await run_until(backend, first, group, lambda: through(10))

    assert first.aborts >= 1 and first.commits >= 1 and first.closed
    assert first.assigned == set(tps)
    written = await read_all(backend.log, backend.sink)
    assert sorted(v for p in written.values() for _, v in p) == sorted(f"R{i}".encode() for i in range(10))
    assert [v for _, v in written[0]] == [f"R{i}".encode() for i in range(0, 10, 2)]  # input order kept

    # A restarted stage (a new handler, the same group) reads only what came after the group's commits.
    await backend.append(record(s, 0, "late"))
    second = Echo(backend.sink)
    await run_until(backend, second, group, lambda: through(11))
    assert sum(second.batches) == 1
    written = await read_all(backend.log, backend.sink)
    assert sorted(v for p in written.values() for _, v in p) == sorted(
        [*(f"R{i}".encode() for i in range(10)), b"LATE"]
    )


# -- TopicIO: the hub's operations (erase, the retention sweep, eval, audit verification) -------------------
@contract
async def test_an_operation_reads_whole_topics_committed_only_and_what_it_wrote(backend: Backend) -> None:
    io = backend.topic_io
    first, second = fact("r1"), fact("r2")
    await backend.committed(record(backend.source, 0, "a"), Output(backend.source, b"f", first, partition=1))
    await backend.aborted(record(backend.source, 1, "never"))
    async with io.writing() as out:
        await out.send(backend.source, b"k", second, partition=0)

    raw = await io.read_partitions(backend.source, 2)
    assert [value for _, value in raw[0]] == [b"a", second]
    assert [value for _, value in raw[1]] == [first]  # the aborted record is not read
    assert all(a < b for records in raw.values() for (a, _), (b, _) in itertools.pairwise(records))
    decoded = await io.read_decoded(backend.source, 2, expect=AUDIT_EVENT)
    assert sorted(event["item_id"] for event in decoded) == ["r1", "r2"]  # b"a" is not an audit event: skipped


@dataclass
class SlowToRestore(Echo):
    """A stage whose restore at assignment takes longer than its group's session (10 s): its batches wait
    for it, as every stage's do."""

    restore_s: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def restored(self) -> bool:
        return self.done.is_set()

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        await super().on_assigned(partitions)
        await asyncio.sleep(self.restore_s)
        self.done.set()

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        await self.done.wait()
        return await super().handle(records)


@contract
async def test_a_restore_longer_than_the_group_session_keeps_the_stage_in_its_group(backend: Backend) -> None:
    """aiokafka sends no heartbeat while an assignment callback runs: a restore awaited there for longer
    than the session had the member thrown out, its commit refused, and the next assignment restore again,
    for ever (a worker with 10^4 reports of history never served again). The restore runs beside the
    heartbeats: the stage keeps its group, and writes each output once, with no batch aborted."""
    s, group = backend.source, f"contract-{uuid.uuid4().hex[:6]}"
    tps = [TopicPartition(s, 0), TopicPartition(s, 1)]
    await backend.append(*(record(s, i % 2, f"r{i}") for i in range(6)))
    slow = SlowToRestore(backend.sink, restore_s=14.0)

    async def through() -> bool:
        written = await read_all(backend.log, backend.sink)
        committed = await backend.log.committed(group, tps)
        async with backend.log.reading() as reader:
            ends = await reader.settled_ends(tps)
        return sum(map(len, written.values())) >= 6 and committed == ends

    await run_until(backend, slow, group, through)
    assert slow.restored and slow.aborts == 0 and slow.commits >= 1
    written = await read_all(backend.log, backend.sink)
    assert sorted(v for p in written.values() for _, v in p) == sorted(f"R{i}".encode() for i in range(6))
