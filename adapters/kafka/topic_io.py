"""domain.log.TopicIO on Kafka: whole topics read under read_committed, records written by an idempotent
producer with acks=all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from adapters.kafka.feeds import read_decoded, read_partitions
from adapters.kafka.producer import Producer, new_producer
from domain.log import Publisher, RawRecord


class ProducerPublisher:
    """domain.log.Publisher over a started producer."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    async def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        await self.producer.send_and_wait(topic, key=key, value=value, partition=partition)


class KafkaTopicIO:
    def __init__(self, bootstrap: str, client_options: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.options = dict(client_options or {})

    async def read_partitions(self, topic: str, partitions: int) -> dict[int, list[RawRecord]]:
        return await read_partitions(self.bootstrap, topic, partitions, self.options)

    async def read_decoded(self, topic: str, partitions: int, expect: str | None = None) -> list[dict[str, Any]]:
        return await read_decoded(self.bootstrap, topic, partitions, self.options, expect=expect)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[Publisher]:
        producer = new_producer(self.bootstrap, self.options)
        await producer.start()
        try:
            yield ProducerPublisher(producer)
        finally:
            await producer.stop()
