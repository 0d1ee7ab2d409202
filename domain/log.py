"""The event log as a stage sees it: the records it reads, the outputs it writes, and the ports that bring them.

A stage handler (streams/agents/) is a `BatchHandler`: the runtime hands it batches of committed records and
writes the outputs it returns, with the batch's input positions, in one transaction. To rebuild its state
a handler reads topics back through `Restore`, and keeps whole-topic facts (agreements, erasures) current
through `FactFeeds`. The Kafka adapter (adapters/kafka/log.py) fills these ports on a broker; the in-memory
log (adapters/memory/log.py) fills them for unit tests; one contract suite holds both to the same answers
(tests/integration/test_log_contract.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

LOG_APPEND_TIME = 1  # the timestamp type of a record the broker stamped as it appended it (Kafka's numbering)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    # The broker stamps each record as it appends it: what the hub judges freshness and key revocation by
    # must not be a time the producer chose (a leaked, revoked key could backdate its records otherwise).
    broker_time: bool = False

    def configs(self) -> dict[str, str]:
        configs = {"retention.ms": str(self.retention_ms), "cleanup.policy": "delete"}
        if self.broker_time:
            configs["message.timestamp.type"] = "LogAppendTime"
        return configs


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class LogRecord(Protocol):
    """A committed record as a stage reads it (on Kafka: aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch: the producer's time, or the broker's (`timestamp_type`)."""

    @property
    def timestamp_type(self) -> int:
        """0: the producer set `timestamp`; LOG_APPEND_TIME: the broker did."""


@dataclass(frozen=True)
class Record:
    """A LogRecord held in memory."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0
    timestamp_type: int = 0


RawRecord = tuple[int, bytes | None]  # (offset, value) of one partition
Written = tuple[TopicPartition, int]  # where an output landed: its partition and offset


@dataclass(frozen=True)
class Output:
    """A record a stage writes: committed with the input positions of its batch, or not at all."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


class BatchHandler(Protocol):
    """A stage's logic, driven by a transactional runtime (`Transactions.processor`)."""

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """Rebuild partition state before the first batch of those partitions."""

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Drop state of partitions this worker no longer owns."""

    async def handle(self, records: Sequence[Any]) -> list[Output]:
        """Outputs for a batch of LogRecords. Must not commit state: see committed()/aborted().

        A handler may also define `async def tick(self) -> list[Output]`: called when the stage is idle,
        for what it must write because time passed; committed or aborted like a batch.

        And `def written(self, at: Sequence[Written]) -> None`: called once the transaction committed, just
        before `committed()`, with where each output landed, in the order `handle` (or `tick`) returned them.
        A stage that keeps state folded from its own output checkpoints it there (streams/checkpointed.py),
        as Kafka Streams checkpoints a store at the offsets its producer was acknowledged."""

    def committed(self) -> None:
        """The batch's transaction committed: promote its pending state."""

    def aborted(self) -> None:
        """The batch's transaction aborted: forget its pending state."""

    async def close(self) -> None:
        """Release what the handler opened (feeds, consumers)."""


class UnsettledTopic(RuntimeError):
    """A transaction stayed open below the end of a topic a stage restores from: restore later."""


class LogReader(Protocol):
    """One reading of committed records, outside any consumer group."""

    async def settled_ends(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The end of every record written so far, once every transaction among them has ended: what a stage
        restoring from its own output reads up to. Raises UnsettledTopic if one stays open too long."""

    async def read(
        self, stop_at: Mapping[TopicPartition, int], start_at: Mapping[TopicPartition, int] | None = None
    ) -> list[LogRecord]:
        """The committed records of each partition of `stop_at`, from `start_at` (default: its beginning) up
        to, not including, `stop_at`, in log order within each partition."""


class Restore(Protocol):
    """Reads topics back, to rebuild a stage's state."""

    def reading(self) -> AbstractAsyncContextManager[LogReader]:
        """A reader for one restore (on Kafka: a consumer of its own, closed at the end)."""

    async def committed(self, group_id: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Where a consumer group has committed on these partitions (0 where it has not): a stage restoring
        its state replays its input up to here, and processes the rest again as batches."""


class FactFeed(Protocol):
    """Every record of some topics, from the beginning, handed decoded to its topic's handler."""

    async def start(self) -> None:
        """Apply everything up to the current end. Idempotent; a start that failed can be called again."""

    async def catch_up(self) -> int:
        """Apply what was committed since; returns how many records were applied."""

    async def stop(self) -> None: ...


class Publisher(Protocol):
    """Writes single records, each acknowledged before it returns (the gateway's events and audit)."""

    async def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        """Write one record; return once the brokers acknowledged it."""


class TopicIO(Protocol):
    """What the hub's operations (erase, the retention sweep, eval, audit verification, loading agreements)
    need of the log: whole topics read to their committed end, and records written, each acknowledged."""

    async def read_partitions(self, topic: str, partitions: int) -> dict[int, list[RawRecord]]:
        """Every committed record of each partition, in offset order."""

    async def read_decoded(self, topic: str, partitions: int, expect: str | None = None) -> list[dict[str, Any]]:
        """Every committed record of the topic, decoded; values not of `expect` (or not the hub's) skipped."""

    def writing(self) -> AbstractAsyncContextManager[Publisher]:
        """A publisher, started on entry and stopped on exit."""


class FactFeeds(Protocol):
    def feed(self, handlers: Mapping[str, Callable[[dict[str, Any]], None]]) -> FactFeed:
        """One feed of whole topics, each record handed decoded to its topic's handler (no consumer group:
        every instance of a stage needs all of them). Records that are not the hub's Avro are skipped: not the
        feed's to judge. A handler knows which topic its facts came from: who may write a topic decides what
        its facts may do."""


class TopicConfigs(Protocol):
    async def broker_stamps(self, topic: str) -> bool:
        """Whether the broker stamps every record of `topic` as it appends it (LogAppendTime). A record's own
        timestamp-type bit is not proof: a producer sets it."""


class Stop(Protocol):
    """Tells a runner to finish (an asyncio.Event)."""

    def is_set(self) -> bool: ...


class StageRunner(Protocol):
    """Runs one handler until `stop` is set: each batch's outputs and its input positions commit together."""

    group_id: str
    input_topic: str
    also_from: list[str]

    async def run(self, stop: Stop) -> None: ...


class Transactions(Protocol):
    """The transactional output: where a stage's outputs are written exactly once."""

    def processor(
        self,
        *,
        group_id: str,
        instance_id: str,
        input_topic: str,
        handler: BatchHandler,
        also_from: Sequence[str] = (),
    ) -> StageRunner:
        """A runner of `handler` over `input_topic` (and `also_from`, further inputs read in the same
        transactions) in consumer group `group_id`, as member `instance_id`."""


class EventLog(Restore, FactFeeds, TopicConfigs, Transactions, Protocol):
    """Everything a stage reads and writes: what its handler is built with."""
