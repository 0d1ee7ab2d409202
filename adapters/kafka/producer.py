"""The hub's Kafka producer: idempotent and acks=all, so a retried send is written once."""

from __future__ import annotations

from typing import Any, TypeAlias

from aiokafka import AIOKafkaProducer

Producer: TypeAlias = AIOKafkaProducer


def new_producer(bootstrap: str, client_options: dict[str, Any] | None = None) -> Producer:
    """Idempotent, acks=all: a retried send is written once."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        **(client_options or {}),
    )
