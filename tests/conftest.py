"""Fixtures: one real broker per test session; per test its own home, keys and topic prefix."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from adapters.kafka.broker_quirks import quirks_for, resolve_quirks
from adapters.kafka.embedded import free_port, wait_ready
from adapters.sql.database import Database
from tests.harness import Hub, broker_kind, local_broker

# Property tests: a fast profile in `make test`, 10^4 cases each in `make bench`.
settings.register_profile("fast", max_examples=200, deadline=None)
settings.register_profile("bench", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's broker (TIPHUB_TEST_BROKER, see broker_kind): started here unless it is HOST:PORT."""
    target = broker_kind()
    if target == "testcontainers":
        if shutil.which("docker") is None:
            pytest.skip("TIPHUB_TEST_BROKER=testcontainers needs a Docker engine")
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            quirks_for("kafka").install()
            yield kafka.get_bootstrap_server()
        return
    if target not in ("kafka", "noida"):
        wait_ready(target)
        resolve_quirks(target)  # the test process reads topics too: as the hub's processes would
        yield target
        return
    quirks_for(target).install()
    started = local_broker(tmp_path_factory.mktemp("broker")).start()
    try:
        yield started.bootstrap
    finally:
        started.stop()


@pytest.fixture
def hub(broker: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Hub]:
    """A hub home with keys, and this test's own topics on the shared broker."""
    with Hub.create(broker, tmp_path, request.node.name) as hub:
        yield hub


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL: TIPHUB_TEST_POSTGRES if set, else a cluster this session starts in a temporary
    directory with Debian's server binaries (scripts/ensure-postgres installs them), as the postgres
    user when the session runs as root (the server refuses root)."""
    target = os.environ.get("TIPHUB_TEST_POSTGRES")
    if target:
        yield target
        return
    initdb = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if initdb is None:
        pytest.skip("no PostgreSQL server binaries (scripts/ensure-postgres installs Debian's postgresql)")
    bindir = Path(initdb).resolve().parent
    data = Path(tempfile.mkdtemp(prefix="tiphub-pg-"))
    as_postgres: list[str] = []
    if os.getuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]

    def run(*args: str) -> None:
        done = subprocess.run([*as_postgres, *args], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            pytest.skip(f"could not start a PostgreSQL: {' '.join(args[:1])}: {done.stderr.strip()[-300:]}")

    port = free_port()
    run(str(bindir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-o", options, "-l", str(data / "log"), "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[Database]:
    """A Database on a schema of its own in the session's PostgreSQL, dropped after the test."""
    schema = "t" + uuid.uuid4().hex[:10]
    admin = Database(postgres_url)
    admin.execute(f"CREATE SCHEMA {schema}")
    db = Database(f"{postgres_url}?options=-csearch_path%3D{schema}")
    try:
        yield db
    finally:
        db.close()
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
