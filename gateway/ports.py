"""What the gateway needs of a broker, as plain types: the records its folds read, and a publisher to
write with (gateway/broker.py is the Kafka adapter behind both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TopicRecord:
    """One record of a tailed topic, as any Kafka client reads it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int  # milliseconds since the epoch


class Publisher(Protocol):
    async def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        """Write one record; return once the brokers acknowledged it."""
