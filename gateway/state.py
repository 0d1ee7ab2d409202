"""The gateway's state: every client, key and view it serves from, built once when it starts (by the
composition root, tiphub/serving.py, from the container), stopped when it stops, and handed to the routes as
one typed object (gateway/deps.py)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import FastAPI

from adapters.kafka.tail import StageLag, Tail
from adapters.sql.tokens import TokenAuthority
from domain.envelope_keys import EnvelopeKeys
from domain.log import Publisher, TopicIO
from domain.ports import AuditAnchors, KeyVault
from domain.read_models import ReadModels
from gateway.cursors import CursorSealer
from gateway.metrics import GatewayMetrics
from gateway.security import AuditSink, GatewayKeys
from gateway.visibility import Visibility
from schemas.registry import SchemaRegistry
from streams.topics import Topics
from tiphub.settings import Settings


@dataclass(frozen=True)
class GatewayState:
    settings: Settings
    bootstrap: str
    topics: Topics
    tokens: TokenAuthority
    keys: GatewayKeys
    cursors: CursorSealer
    vault: KeyVault
    anchors: AuditAnchors  # the audit's signed heads outside Kafka
    envelope_keys: EnvelopeKeys
    topic_io: TopicIO  # whole topics read (the audit trail)
    publisher: Publisher  # the gateway's one producer: the events it writes (summaries, triage, relayed reports)
    audit: AuditSink  # audit events, through the same producer
    views: ReadModels  # the read models the tail folds the topics into (domain/read_models.py)
    visibility: Visibility
    tail: Tail
    lag: StageLag
    metrics: GatewayMetrics
    partners: frozenset[str]  # the recipients abroad that an agreement names
    registry: SchemaRegistry
    submitted: Submitted = field(default_factory=lambda: Submitted())  # relayed report ids -> agency, until decided


class Submitted:
    """The report ids this gateway relayed, and for which agency, until the accept stage decided them (then
    the read models answer): the most recent `most` kept, so memory does not grow with what was relayed."""

    def __init__(self, most: int = 100_000) -> None:
        self.most = most
        self._held: OrderedDict[str, str | None] = OrderedDict()

    def __setitem__(self, report_id: str, agency: str | None) -> None:
        self._held[report_id] = agency
        self._held.move_to_end(report_id)
        while len(self._held) > self.most:
            self._held.popitem(last=False)

    def get(self, report_id: str) -> str | None:
        return self._held.get(report_id)

    def decided(self, report_id: str) -> None:
        self._held.pop(report_id, None)


# Given the gateway's metrics: its state, started, stopped on exit (tiphub/serving.py builds it).
StateFactory = Callable[[GatewayMetrics], AbstractAsyncContextManager[GatewayState]]


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def start_in_order(stack: AsyncExitStack, *services: Service) -> None:
    """Start each service in turn, its stop pushed on `stack` before its start: when a start fails, leaving
    the stack stops it (it may have opened connections half-way) and every service started before it."""
    for service in services:
        stack.push_async_callback(service.stop)
        await service.start()


def started(app: FastAPI) -> GatewayState | None:
    """The state of a started gateway; None before its lifespan has set it."""
    state: GatewayState | None = getattr(app.state, "gateway", None)
    return state
