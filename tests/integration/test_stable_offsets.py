"""Where a group committed, as a stage reads it before reading a batch again (adapters/kafka/stable_offsets.py).

aiokafka's own OffsetFetch answers the offsets from before a transaction that commits offsets for the group
while it is pending, and for a moment after it committed (until its markers are written): a stage that
read a batch again from there wrote its outputs twice (CI, a rolling restart of a three-node cluster).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.kafka.embedded import ensure_topics, with_admin
from adapters.kafka.feeds import committed_offsets
from adapters.kafka.stable_offsets import Unstable, stable_committed
from domain.log import TopicSpec
from tests.harness import broker_kind

pytestmark = pytest.mark.integration
Group = tuple[str, TopicPartition, AIOKafkaConsumer, AIOKafkaProducer]


@asynccontextmanager
async def group_and_producer(bootstrap: str) -> AsyncIterator[Group]:
    topic, group = f"stable-{uuid.uuid4().hex[:8]}", f"stable-{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, [TopicSpec(topic, 1, -1)], 1)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{group}.writer")
    await consumer.start()
    await producer.start()
    try:
        yield group, TopicPartition(topic, 0), consumer, producer
    finally:
        await producer.stop()
        await consumer.stop()
        with_admin(bootstrap, lambda admin: admin.delete_topics([topic]))


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


@pytest.mark.noida
def test_the_offsets_a_committed_transaction_sent_are_what_the_group_committed(broker: str) -> None:
    async def scenario() -> None:
        async with group_and_producer(broker) as (group, tp, consumer, producer):
            assert await stable_committed(consumer, {tp}) == {tp: None}  # never committed
            async with producer.transaction():
                await producer.send_offsets_to_transaction({tp: 42}, group)
            assert await stable_committed(consumer, {tp}) == {tp: 42}
            assert await consumer.committed(tp) == 42

    run(scenario)


@pytest.mark.skipif(broker_kind() != "kafka", reason="require_stable (KIP-447) is Apache Kafka's")
def test_while_a_transaction_with_the_groups_offsets_is_pending_no_offset_is_answered(broker: str) -> None:
    """The plain fetch answers the offset from before the transaction; the stable one waits for it to end,
    and then answers what it committed. A stage's restore asks the same (`committed_offsets`): it replays its
    input up to exactly where its processor then resumes."""

    async def scenario() -> None:
        async with group_and_producer(broker) as (group, tp, consumer, producer):
            async with producer.transaction():
                await producer.send_offsets_to_transaction({tp: 7}, group)
            await producer.begin_transaction()
            await producer.send_offsets_to_transaction({tp: 42}, group)
            assert await consumer.committed(tp) == 7  # what a stage reading a batch again used to go by
            with pytest.raises(Unstable):
                await stable_committed(consumer, {tp}, within_s=1.5)
            waiting = asyncio.ensure_future(stable_committed(consumer, {tp}, within_s=30))
            restoring = asyncio.ensure_future(committed_offsets(broker, group, [tp]))
            await asyncio.sleep(1.0)
            assert not waiting.done() and not restoring.done()
            await producer.commit_transaction()
            assert await asyncio.wait_for(waiting, 30) == {tp: 42}
            assert await asyncio.wait_for(restoring, 30) == {tp: 42}

    run(scenario)
