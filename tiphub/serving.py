"""The gateway's state, built by the composition root: its stores from the container, its broker
clients, views and metrics, started in order and stopped in reverse (gateway/state.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial

from adapters.kafka.broker_quirks import resolve_quirks
from adapters.kafka.tail import KafkaPublisher, StageLag, Tail
from adapters.kafka.topic_io import KafkaTopicIO
from adapters.sql.read_models import SqlReadModels
from domain.signing import RELAY_AGENCY, agency_key_id
from gateway.cursors import CursorSealer
from gateway.metrics import GatewayMetrics
from gateway.security import AuditSink, GatewayKeys
from gateway.state import GatewayState, start_in_order
from gateway.visibility import Visibility
from policies.loader import foreign_partners
from schemas.registry import load_registry
from tiphub.container import Container
from tiphub.keys import KeyStore
from tiphub.runtime import resolve_broker


def gateway_state(
    container: Container, bootstrap: str | None = None
) -> Callable[[GatewayMetrics], AbstractAsyncContextManager[GatewayState]]:
    """What `create_app` starts the gateway with (`bootstrap`: a broker already known, else resolved)."""
    return partial(running, container, bootstrap)


@asynccontextmanager
async def running(container: Container, bootstrap: str | None, metrics: GatewayMetrics) -> AsyncIterator[GatewayState]:
    """The gateway's state with its producer started and its read models brought up to date from where they
    stood (the topics' beginnings for a new store); what
    started is stopped on the way out, also when a later start fails."""
    settings = container.settings
    broker = bootstrap or resolve_broker(settings)  # resolve_broker installs the broker kind's quirks
    if bootstrap:
        resolve_quirks(broker, settings.broker_kind, **settings.kafka_options())
    topics = container.topics
    tokens = container.tokens  # first: on a fresh home it creates the key store the others read
    keys = gateway_keys(container.keys)
    vault = container.vault
    publisher = KafkaPublisher(broker, settings.kafka_options())
    views = SqlReadModels(settings.read_model_database, topics, keys.audit_mac, keys.hub_signing_public)
    tail = Tail(broker, topics, views.tailed(), views, settings.kafka_options())
    state = GatewayState(
        settings=settings,
        bootstrap=broker,
        topics=topics,
        tokens=tokens,
        keys=keys,
        cursors=CursorSealer(keys.cursors),
        vault=vault,
        anchors=container.anchors,
        envelope_keys=container.envelope_keys,
        topic_io=KafkaTopicIO(broker, settings.kafka_options()),
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
        stack.callback(views.close)
        await start_in_order(stack, publisher, tail)
        yield state


def gateway_keys(store: KeyStore) -> GatewayKeys:
    """The key material the gateway uses, read once at start from the hub's key files."""
    relay = store.relay_signing_key()
    return GatewayKeys(
        relay=relay,
        relay_key_id=agency_key_id(RELAY_AGENCY, relay.public_key()),
        hub_public=store.hub_encryption_key().public_key(),
        hub_key_id=store.hub_key_id(),
        hub_signing_public=store.hub_signing_key().public_key(),
        audit_mac=store.audit_mac_key(),
        cursors=store.cursor_key_path.read_bytes(),
        vault_keks=store.vault_keks,
    )
