"""Wiring shared by the commands: which broker, which keys, which topics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adapters.kafka.apache_kafka import KafkaCluster
from adapters.kafka.broker_quirks import BrokerQuirks, resolve_quirks
from adapters.kafka.embedded import BrokerError, EmbeddedBroker, ensure_topics, wait_ready
from adapters.kafka.producer import Producer, new_producer
from adapters.sql.tokens import TokenAuthority
from domain.envelope_keys import EnvelopeKeys
from domain.signing import RELAY_AGENCY, agency_key_id
from producers.publisher import AgencyPublisher
from streams.topics import Topics
from tiphub.container import Container
from tiphub.keys import DEMO_AGENCIES, KeyStore
from tiphub.settings import Settings

log = logging.getLogger(__name__)


def broker_dir(settings: Settings) -> Path:
    return settings.home / "broker"


def kafka_dir(settings: Settings) -> Path:
    return settings.home / "kafka"


LocalBroker = EmbeddedBroker | KafkaCluster


def find_local_broker(settings: Settings) -> LocalBroker | None:
    """The broker `tiphub broker start` (or `tiphub up`) left running under TIPHUB_HOME, of either kind."""
    return KafkaCluster.find_running(kafka_dir(settings)) or EmbeddedBroker.find_running(broker_dir(settings))


def start_local_broker(
    settings: Settings, kind: str | None = None, brokers: int = 1, progress: Callable[[str], None] | None = None
) -> LocalBroker:
    """Start a local broker of `kind` (default TIPHUB_BROKER_KIND) under TIPHUB_HOME."""
    kind = kind or settings.broker_kind or "noida"
    if kind == "kafka":
        return KafkaCluster(kafka_dir(settings), brokers, cache=settings.home).start(progress=progress or log.info)
    if kind != "noida":
        raise BrokerError(f"broker kind {kind!r} is not one of noida, kafka")
    if brokers != 1:
        raise BrokerError("noida-db runs one broker: --brokers 3 needs --kind kafka")
    return EmbeddedBroker(broker_dir(settings)).start()


@dataclass(frozen=True)
class BrokerConnection:
    bootstrap: str
    quirks: BrokerQuirks
    started: LocalBroker | None  # the local broker this call started, for its caller to stop


def connect_broker(
    settings: Settings, *, start: bool = True, progress: Callable[[str], None] | None = None
) -> BrokerConnection:
    """--broker if given; else the local broker under TIPHUB_HOME, started if not running. Creates (or
    checks) the hub's topics, replicated on every node of a local cluster, and installs the quirks of the
    broker's kind (a local broker's own kind, whatever is configured)."""
    replication = settings.replication_factor
    kind_seen: str | None = settings.broker_kind
    started: LocalBroker | None = None
    if settings.broker:
        bootstrap = settings.broker
        # A broker restarting or not up yet is waited for, not a reason to exit at start.
        wait_ready(bootstrap, settings.broker_wait_s, **settings.kafka_options())
    else:
        running = find_local_broker(settings)
        if running is None:
            if not start:
                raise RuntimeError("no local broker is running (start one with `tiphub broker start`)")
            started = running = start_local_broker(settings, progress=progress)
        bootstrap, kind_seen = running.bootstrap, running.KIND
        replication = max(replication, running.replication)
    try:
        ensure_topics(bootstrap, topics_for(settings).specs(), replication, **settings.kafka_options())
        quirks = resolve_quirks(bootstrap, kind_seen, **settings.kafka_options())
    except BaseException:
        if started is not None:  # nothing this call started outlives its failure
            started.stop()
        raise
    return BrokerConnection(bootstrap, quirks, started)


def resolve_broker(settings: Settings, *, start: bool = True) -> str:
    """The bootstrap of `connect_broker`."""
    return connect_broker(settings, start=start).bootstrap


def topics_for(settings: Settings) -> Topics:
    return Topics(settings.topic_prefix, settings.partitions)


@dataclass(frozen=True)
class KeySetup:
    created: list[Path]
    registered: list[str]


def init_keys(settings: Settings, agencies: tuple[str, ...] = DEMO_AGENCIES) -> KeySetup:
    """Create missing keys and register the demo agencies' public keys. Idempotent."""
    store = KeyStore(settings.home)
    created = store.init(agencies)
    registry = Container(settings).registry
    registered = [registry.register(agency, store.agency_key(agency).public_key()) for agency in store.agencies()]
    registered.append(registry.register(RELAY_AGENCY, store.relay_signing_key().public_key()))
    return KeySetup(created, registered)


def envelope_keys_for(settings: Settings) -> EnvelopeKeys:
    """The hub's envelope keys per epoch, in the vault (what its own publishers seal for)."""
    return Container(settings).envelope_keys


def publishers_for(
    settings: Settings, bootstrap: str, producer: Producer | None, agencies: list[str]
) -> dict[str, AgencyPublisher]:
    """One AgencyPublisher per agency with its demo key, sharing one producer (None: for sealing only); each
    seals for the hub's envelope key of the current epoch."""
    store = KeyStore(settings.home)
    epochs = envelope_keys_for(settings)
    return {
        agency: AgencyPublisher(
            bootstrap=bootstrap,
            topic=topics_for(settings).submitted,
            agency=agency,
            agency_key=store.agency_key(agency),
            hub_key=epochs.current,
            producer=producer,
        )
        for agency in agencies
    }


__all__ = [
    "KeySetup",
    "agency_key_id",
    "broker_dir",
    "envelope_keys_for",
    "init_keys",
    "new_producer",
    "publishers_for",
    "resolve_broker",
    "topics_for",
]


def token_authority(settings: Settings) -> TokenAuthority:
    """The gateway's token issuer and verifier (creates the token key on first use)."""
    return Container(settings).tokens
