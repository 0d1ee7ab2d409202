"""The gateway's composition root: every client, key and view it serves from, built once from settings
when it starts, stopped when it stops, and handed to the routes as one typed object (gateway/deps.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import FastAPI

from gateway.broker import KafkaPublisher, StageLag, Tail
from gateway.cursors import CursorSealer
from gateway.metrics import GatewayMetrics
from gateway.ports import Publisher
from gateway.security import AuditSink, GatewayKeys
from gateway.views import HubViews
from gateway.visibility import Visibility
from policies.loader import foreign_partners
from schemas.registry import SchemaRegistry, load_registry
from streams.broker_quirks import resolve_quirks
from streams.topics import Topics
from tiphub.database import Database
from tiphub.envelope_keys import EnvelopeKeys
from tiphub.runtime import resolve_broker, token_authority, topics_for
from tiphub.settings import Settings
from tiphub.tokens import TokenAuthority
from tiphub.vault import KeyVault, SqlKeyVault


@dataclass(frozen=True)
class GatewayState:
    settings: Settings
    bootstrap: str
    topics: Topics
    tokens: TokenAuthority
    keys: GatewayKeys
    cursors: CursorSealer
    vault: KeyVault
    envelope_keys: EnvelopeKeys
    publisher: Publisher  # the gateway's one producer: the events it writes (summaries, triage, relayed reports)
    audit: AuditSink  # audit events, through the same producer
    views: HubViews
    visibility: Visibility
    tail: Tail
    lag: StageLag
    metrics: GatewayMetrics
    partners: frozenset[str]  # the recipients abroad that an agreement names
    registry: SchemaRegistry
    submitted: dict[str, str | None] = field(default_factory=dict)  # relayed report ids -> agency, until decided


@asynccontextmanager
async def running(settings: Settings, bootstrap: str | None, metrics: GatewayMetrics) -> AsyncIterator[GatewayState]:
    """The gateway's state with its producer started and its views rebuilt from the topics' beginnings; what
    started is stopped on the way out, also when a later start fails."""
    broker = bootstrap or resolve_broker(settings)  # resolve_broker installs the broker kind's quirks
    if bootstrap:
        resolve_quirks(broker, settings.broker_kind, **settings.kafka_options())
    topics = topics_for(settings)
    tokens = token_authority(settings)  # first: on a fresh home it creates the key store the others read
    keys = GatewayKeys.load(settings.home)
    vault = SqlKeyVault(Database(settings.vault_database), keys.vault_keks)
    publisher = KafkaPublisher(broker, settings.kafka_options())
    views = HubViews(topics)
    tail = Tail(broker, topics, views.tailed(), views.apply, settings.kafka_options())
    state = GatewayState(
        settings=settings,
        bootstrap=broker,
        topics=topics,
        tokens=tokens,
        keys=keys,
        cursors=CursorSealer(keys.cursors),
        vault=vault,
        envelope_keys=EnvelopeKeys(vault, settings.envelope_epoch_s),
        publisher=publisher,
        audit=AuditSink(publisher, topics),
        views=views,
        visibility=Visibility(views),
        tail=tail,
        lag=StageLag(broker, topics, tail, settings.kafka_options()),
        metrics=metrics,
        partners=frozenset(foreign_partners(settings.agreements_dir)),
        registry=load_registry(),
    )
    async with AsyncExitStack() as stack:
        await start_in_order(stack, publisher, tail)
        yield state


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
