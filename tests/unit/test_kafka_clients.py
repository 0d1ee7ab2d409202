"""Client fixes (adapters/kafka/kafka_clients.py, adapters/kafka/transactional.py): what aiokafka does, installed."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import struct
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.coordinator.protocol import ConsumerProtocol, ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError
from aiokafka.producer.transaction_manager import TransactionState
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy as BatchBuilder
from aiokafka.structs import TopicPartition

from adapters.kafka import kafka_clients
from adapters.kafka.broker_quirks import APACHE_KAFKA, NOIDA, kind_from_api_versions, quirks_for
from adapters.kafka.kafka_clients import ended_before
from adapters.kafka.transactional import producer_broken

PATCHED = [
    (aiokafka_fetcher.Fetcher, "_proc_fetch_request"),
    (ConsumerProtocolMemberAssignment, "decode"),
    (aiokafka_fetcher, "MemoryRecords"),
    (aiokafka_fetcher.PartitionRecords, "__init__"),
]


@pytest.fixture
def unpatched(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """aiokafka as it comes, and as it was again after the test: patches are process-wide, and later
    tests in this process read a real Apache Kafka with the plain client."""
    for owner, name in PATCHED:
        monkeypatch.setattr(owner, name, inspect.getattr_static(owner, name))  # undone to what it was
    monkeypatch.setattr(kafka_clients, "_installed", [])
    for owner, flag in [
        (ConsumerProtocolMemberAssignment, "_tiphub_empty_ok"),
        (aiokafka_fetcher.PartitionRecords, "_tiphub_ended_aborts"),
    ]:
        monkeypatch.setattr(owner, flag, False, raising=False)
    yield


def current() -> list[object]:
    return [inspect.getattr_static(owner, name) for owner, name in PATCHED]


def test_each_workaround_is_on_for_noida_db_only(unpatched: None) -> None:
    workarounds = [name for name in vars(APACHE_KAFKA) if name != "kind"]
    assert [name for name in workarounds if getattr(APACHE_KAFKA, name)] == []
    assert [name for name in workarounds if not getattr(NOIDA, name)] == []
    assert quirks_for("kafka") is APACHE_KAFKA and quirks_for("noida") is NOIDA
    plain = current()
    quirks_for("kafka").install()
    assert current() == plain, "Apache Kafka runs the plain aiokafka"
    quirks_for("noida").install()
    assert all(now is not before for now, before in zip(current(), plain, strict=True))
    with pytest.raises(ValueError, match="redpanda"):
        quirks_for("redpanda")


def test_a_broker_that_serves_describe_quorum_is_apache_kafka() -> None:
    assert kind_from_api_versions({0: (0, 13), 55: (0, 2)}) == "kafka"
    assert kind_from_api_versions({0: (0, 9), 60: (0, 0)}) == "noida"  # noida-db's list has no 55


def test_an_empty_group_assignment_reads_as_no_partitions_and_real_ones_still_decode(unpatched: None) -> None:
    NOIDA.install()
    NOIDA.install()  # idempotent
    assert ConsumerProtocol.ASSIGNMENT.decode(b"").partitions() == []
    real = ConsumerProtocolMemberAssignment(0, [ConsumerProtocolMemberAssignment.Assignment("t", [0, 2])], b"")
    assert [tp.partition for tp in ConsumerProtocol.ASSIGNMENT.decode(real.encode()).partitions()] == [0, 2]


# -- aborted transactions that ended before the fetch offset ----------------------------------
PRODUCER = 1003


class _Batch(BatchBuilder):
    """A record batch as a broker stores it: transactional, at a base offset, a control marker or data."""

    def __init__(self, base_offset: int, control: bool = False) -> None:
        super().__init__(2, 0, 1, PRODUCER, 0, 0, 1 << 20)
        self.base_offset, self.control = base_offset, control

    def _get_attributes(self, include_compression_type: bool = True) -> int:
        return super()._get_attributes(include_compression_type) | (self.CONTROL_MASK if self.control else 0)

    def bytes(self) -> bytes:
        data = self.build()
        struct.pack_into(">q", data, 0, self.base_offset)
        return bytes(data)


def data(base_offset: int, count: int) -> bytes:
    batch = _Batch(base_offset)
    for i in range(count):
        batch.append(i, 0, None, f"record {base_offset + i}".encode(), [])
    return batch.bytes()


def marker(offset: int, abort: bool) -> bytes:
    batch = _Batch(offset, control=True)
    batch.append(0, 0, struct.pack(">HH", 0, 0 if abort else 1), b"", [])
    return batch.bytes()


@pytest.fixture(autouse=True)
def _each_test_restores_aiokafka(unpatched: None) -> None:
    """Every test here may install the noida-db patches; none leaves them behind."""


def delivered(answer: bytes, aborted: list[tuple[int, int]], fetch_offset: int) -> list[int]:
    """The offsets a read-committed consumer is given from one fetch answer."""
    NOIDA.install()
    records = aiokafka_fetcher.MemoryRecords(answer)
    tp, read_committed = TopicPartition("t", 0), 1
    fetched = aiokafka_fetcher.PartitionRecords(tp, records, aborted, fetch_offset, None, None, True, read_committed)
    return [r.offset for r in fetched]


def test_an_aborted_transaction_that_ended_before_the_fetch_offset_skips_nothing_after_it() -> None:
    """noida-db lists the aborted transaction at 0..60 (marker at 61) in every later fetch; the same
    producer id then commits 62..64 and 66..67. Unfixed, aiokafka skipped both committed transactions."""
    answer = data(62, 3) + marker(65, abort=False) + data(66, 2) + marker(68, abort=False)
    assert delivered(answer, [(PRODUCER, 0)], 62) == [62, 63, 64, 66, 67]
    assert ended_before([(PRODUCER, 0)], 62, answer) == [(PRODUCER, 0)]


def test_a_fetch_that_starts_inside_an_aborted_transaction_still_skips_the_rest_of_it() -> None:
    # Apache Kafka lists the transaction a fetch starts inside: its remaining batches stay skipped.
    answer = data(10, 3) + marker(13, abort=True) + data(14, 1) + marker(15, abort=False)
    assert delivered(answer, [(PRODUCER, 0)], 10) == [14]
    # No marker of the producer in the answer: the entry is kept, as Kafka means it.
    assert delivered(data(10, 3), [(PRODUCER, 0)], 10) == []
    # An aborted transaction that starts inside the answer is untouched.
    assert delivered(data(20, 2) + marker(22, abort=True) + data(23, 1), [(PRODUCER, 20)], 20) == [23]


def test_a_producer_whose_sender_died_or_whose_transactions_failed_fatally_is_replaced() -> None:
    """The processor replaces such a producer instead of failing every later batch (adapters/kafka/transactional.py)."""

    async def check() -> list[bool]:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", transactional_id="t")
        seen = [producer_broken(producer)]  # not started: nothing wrong yet
        producer._txn_manager._transition_to(TransactionState.FATAL_ERROR)
        seen.append(producer_broken(producer))
        healthy = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", transactional_id="u")
        healthy._sender._sender_task = asyncio.get_running_loop().create_future()
        seen.append(producer_broken(healthy))  # sending
        healthy._sender._sender_task.set_exception(KafkaError("Unexpected error during batch delivery"))
        healthy._sender._sender_task.exception()
        seen.append(producer_broken(healthy))  # its sender task ended
        for never_started in (producer, healthy):
            never_started._closed = True  # nothing to close
        return seen

    assert asyncio.run(check()) == [False, True, False, True]


class _SwallowingFetcher:
    """aiokafka's fetch routine as it stands (consumer/fetcher.py, `_fetch_requests_routine`): on a new
    assignment it cancels its request in flight and awaits it under suppress(CancelledError), so a cancel of the
    routine itself that lands there is swallowed and the routine loops on."""

    def __init__(self) -> None:
        self.reassigned = asyncio.Event()
        self.awaiting_request = asyncio.Event()
        self._fetch_task = asyncio.ensure_future(self._routine())

    async def _routine(self) -> None:
        try:
            while True:
                await self.reassigned.wait()
                self.reassigned.clear()
                request = asyncio.ensure_future(self._request())
                await asyncio.sleep(0)
                request.cancel()
                self.awaiting_request.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await request
                await asyncio.wait({asyncio.ensure_future(asyncio.sleep(3600))})
        except asyncio.CancelledError:
            pass

    @staticmethod
    async def _request() -> None:
        """A fetch from a broker just killed: slow to end when cancelled."""
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)
            raise

    async def close(self) -> None:
        self._fetch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._fetch_task


class _Consumer:
    def __init__(self) -> None:
        self._fetcher = _SwallowingFetcher()

    async def stop(self) -> None:
        await self._fetcher.close()


def test_aiokafkas_fetch_routine_still_swallows_a_cancel_while_it_drops_its_requests() -> None:
    """The defect stop_consumer works around; when an aiokafka release fixes it, this fails: drop the workaround."""
    source = inspect.getsource(aiokafka_fetcher.Fetcher._fetch_requests_routine)
    assert "contextlib.suppress(asyncio.CancelledError)" in source


def test_a_stop_whose_cancel_was_swallowed_still_ends() -> None:
    async def scenario() -> tuple[bool, bool]:
        consumer = _Consumer()
        consumer._fetcher.reassigned.set()
        await consumer._fetcher.awaiting_request.wait()
        plain = asyncio.ensure_future(consumer.stop())  # what a plain stop does: waits for ever
        await asyncio.sleep(1.0)
        hung = not plain.done()
        await asyncio.wait_for(kafka_clients.stop_consumer(consumer, patience_s=0.2), 5)
        await plain
        return hung, consumer._fetcher._fetch_task.done()

    hung, ended = asyncio.run(scenario())
    assert hung, "the twin no longer shows the defect"
    assert ended


def test_a_stop_whose_caller_is_cancelled_is_still_seen_through() -> None:
    async def scenario() -> bool:
        consumer = _Consumer()
        consumer._fetcher.reassigned.set()
        await consumer._fetcher.awaiting_request.wait()
        caller = asyncio.ensure_future(kafka_clients.stop_consumer(consumer, patience_s=0.2))
        await asyncio.sleep(0.05)
        caller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await caller
        await asyncio.wait_for(asyncio.shield(consumer._fetcher._fetch_task), 5)
        return consumer._fetcher._fetch_task.done()

    assert asyncio.run(scenario())
