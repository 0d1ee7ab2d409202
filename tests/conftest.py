"""Fixtures: one real broker per test session; per test its own home, keys and topic prefix."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from streams.kafka_clients import harden
from tests.harness import Hub
from tiphub.embedded import EmbeddedBroker, wait_ready

# Property tests: a fast profile in `make test`, 10^4 cases each in `make bench`.
settings.register_profile("fast", max_examples=200, deadline=None)
settings.register_profile("bench", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
harden()  # the test process reads topics too: its idle consumers should not spin


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded broker on a free port with its own data dir; or TIPHUB_TEST_BROKER."""
    target = os.environ.get("TIPHUB_TEST_BROKER")
    if target == "testcontainers":
        if shutil.which("docker") is None:
            pytest.skip("TIPHUB_TEST_BROKER=testcontainers needs a Docker engine")
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    if target:
        wait_ready(target)
        yield target
        return
    embedded = EmbeddedBroker(tmp_path_factory.mktemp("broker")).start()
    try:
        yield embedded.bootstrap
    finally:
        embedded.stop()


@pytest.fixture
def hub(broker: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Hub]:
    """A hub home with keys, and this test's own topics on the shared broker."""
    with Hub.create(broker, tmp_path, request.node.name) as hub:
        yield hub
