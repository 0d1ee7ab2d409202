"""Fixtures for the micro-benchmarks (make bench): real keys, registry and vault in a temp home."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from adapters.sql.database import Database
from adapters.sql.registry import KeyRegistry
from adapters.sql.vault import SqlKeyVault
from domain.linkage import Linker
from policies.loader import load_directory
from policies.model import AgreementSet, LoadedAgreement
from producers.simulate import simulate
from schemas.codec import WireCodec
from streams.accept import AcceptStage, Submission
from tests.envelopes import EnvelopeKit
from tiphub.keys import KeyStore
from tiphub.runtime import init_keys
from tiphub.settings import Settings


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench-home")
    init_keys(Settings(home=path))
    return path


@pytest.fixture(scope="session")
def reports() -> list[dict]:
    return simulate(400, seed=1).reports[:1000]


@pytest.fixture(scope="session")
def submissions(home: Path, reports: list[dict]) -> list[Submission]:
    kit = EnvelopeKit(home, epoch=False)
    now = int(time.time() * 1000)
    return [Submission("s", 0, i, *kit.wire(kit.envelope(r)), now) for i, r in enumerate(reports)]


@pytest.fixture(scope="session")
def stage(home: Path) -> AcceptStage:
    store = KeyStore(home)
    settings = Settings(home=home)
    return AcceptStage(
        registry=KeyRegistry(Database(settings.registry_database)),
        vault=SqlKeyVault(Database(settings.vault_database), store.vault_kek()),
        hub_key=store.hub_encryption_key(),
        hub_key_id=store.hub_key_id(),
        linker=Linker.latest(store.linkage_keys()),
        codec=WireCodec(),
    )


@pytest.fixture(scope="session")
def accepted(stage: AcceptStage, submissions: list[Submission]) -> list[dict]:
    """The accept stage's records for the simulated submissions, decoded as later stages see them."""
    codec = WireCodec()
    schema = codec.registry.latest("tiphub.AcceptedReport")
    records = [v.accepted for v in stage.process(submissions) if v.accepted is not None]
    return [codec.decode(codec.encode_with(schema, r))[1] for r in records]


@pytest.fixture(scope="session")
def agreements() -> AgreementSet:
    from datetime import UTC, datetime

    return AgreementSet([LoadedAgreement(a, datetime(2025, 1, 1, tzinfo=UTC)) for a in load_directory()])
