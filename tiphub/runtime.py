"""Wiring shared by the commands: which broker, which keys, which topics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer

from producers.publisher import AgencyPublisher, new_producer
from streams.topics import Topics
from tiphub.database import Database
from tiphub.embedded import EmbeddedBroker, ensure_topics, wait_ready
from tiphub.keys import DEMO_AGENCIES, RELAY_AGENCY, KeyRegistry, KeyStore, agency_key_id
from tiphub.settings import Settings
from tiphub.tokens import TokenAuthority


def broker_dir(settings: Settings) -> Path:
    return settings.home / "broker"


def resolve_broker(settings: Settings, *, start: bool = True) -> str:
    """--broker if given; else the embedded broker under TIPHUB_HOME, started if not running."""
    if settings.broker:
        bootstrap = settings.broker
        # A broker restarting or not up yet is waited for, not a reason to exit at start.
        wait_ready(bootstrap, settings.broker_wait_s, **settings.kafka_options())
    else:
        running = EmbeddedBroker.find_running(broker_dir(settings))
        if running is None:
            if not start:
                raise RuntimeError("the embedded broker is not running (start it with `tiphub broker start`)")
            running = EmbeddedBroker(broker_dir(settings)).start()
        bootstrap = running.bootstrap
    ensure_topics(
        bootstrap,
        topics_for(settings).specs(),
        settings.replication_factor,
        **settings.kafka_options(),
    )
    return bootstrap


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
    registry = KeyRegistry(Database(settings.registry_database))
    registered = [registry.register(agency, store.agency_key(agency).public_key()) for agency in store.agencies()]
    registered.append(registry.register(RELAY_AGENCY, store.relay_signing_key().public_key()))
    return KeySetup(created, registered)


def publishers_for(
    settings: Settings, bootstrap: str, producer: AIOKafkaProducer | None, agencies: list[str]
) -> dict[str, AgencyPublisher]:
    """One AgencyPublisher per agency with its demo key, sharing one producer (None: for sealing only)."""
    store = KeyStore(settings.home)
    hub = store.hub_encryption_key().public_key()
    return {
        agency: AgencyPublisher(
            bootstrap=bootstrap,
            topic=topics_for(settings).submitted,
            agency=agency,
            agency_key=store.agency_key(agency),
            hub_public=hub,
            hub_key_id=store.hub_key_id(),
            producer=producer,
        )
        for agency in agencies
    }


__all__ = [
    "KeySetup",
    "agency_key_id",
    "broker_dir",
    "init_keys",
    "new_producer",
    "publishers_for",
    "resolve_broker",
    "topics_for",
]


def token_authority(settings: Settings) -> TokenAuthority:
    """The gateway's token issuer and verifier (creates the token key on first use)."""
    store = KeyStore(settings.home)
    if not store.token_signing_path.exists():
        store.init(agencies=())
    key = store.token_signing_key()
    return TokenAuthority(key, key.public_key(), Database(settings.tokens_database))
