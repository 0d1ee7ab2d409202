"""Settings from the environment (TIPHUB_*) and the command line; passed in, never read at import."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIPHUB_", extra="ignore")

    home: Path = Field(default=Path(".tiphub"), description="Keys, key vault and broker data.")
    broker: str | None = Field(default=None, description="host:port of Kafka; unset: embedded broker.")
    broker_kind: Literal["noida", "kafka"] | None = Field(
        default=None,
        description="The broker's kind: kafka (Apache Kafka) or noida (noida-db). Decides the client's "
        "workarounds (adapters/kafka/broker_quirks.py); unset, the broker is asked. Also the local broker a command "
        "starts when none runs and no --broker is given (unset: noida, the zero-install one).",
    )
    broker_wait_s: float = Field(default=120.0, description="How long a starting command waits for --broker.")
    topic_prefix: str = Field(default="", description="Prefix for every topic name (tests, tenants).")
    partitions: int = Field(default=6, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    vault_url: str | None = Field(default=None, description="sqlite:///PATH or postgresql://...")
    registry_url: str | None = Field(default=None, description="Agency key registry database.")
    tokens_url: str | None = Field(default=None, description="Gateway token revocation list database.")
    audit_anchor_url: str | None = Field(default=None, description="Where signed audit chain heads are kept.")
    read_model_url: str | None = Field(
        default=None,
        description="The gateway's read models: sqlite:///PATH (default: read-models.sqlite3 under home, one per "
        "gateway) or postgresql://... (shared by several gateway instances).",
    )
    agreements_dir: Path | None = Field(default=None, description="Agreements to load; default: the shipped ones.")
    instance_id: str = Field(default="0", description="Stable id of this worker (static membership).")
    state_dir: Path | None = Field(
        default=None,
        description="Where a worker keeps its stages' state and checkpoints (one SQLite file per instance); "
        "default: TIPHUB_HOME/state. Deleting it is safe: the state is rebuilt from the topics.",
    )
    correlator_cache_entries: int = Field(
        default=50_000,
        gt=0,
        description="The union stage's state is tables in the worker's state file; this many of their entries are "
        "kept decoded in memory between batches (the least recently used are let go). Larger: fewer reads from "
        "the file; smaller: less memory.",
    )
    health_file: Path | None = Field(
        default=None,
        description="A worker touches this file every few seconds while all its stages run (liveness probes).",
    )
    key_reload_s: float = Field(
        default=30.0,
        gt=0,
        description="How often a worker reads the key directory again: a rotation or retirement takes effect then.",
    )
    max_envelope_age_s: float = 3600.0
    max_future_skew_s: float = 300.0
    envelope_epoch_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long one hub envelope key is current; each is destroyed once its epoch, the envelope "
        "age limit and the skew have passed and every submission of that time is processed.",
    )
    envelope_check_s: float = Field(default=30.0, gt=0, description="How often workers look for keys to destroy.")
    static_hub_key: bool = Field(
        default=False,
        description="Also open envelopes sealed for the long-lived hub key (keys/hub/x25519.pem), for agencies "
        "that cannot fetch epoch keys. What is sealed for it stays readable until it is rotated and retired.",
    )
    max_value_bytes: int = 1 << 20
    gateway_url: str = "http://127.0.0.1:8700"
    gateway_rate_per_s: float = Field(default=50.0, description="Requests per second per credential (0: none).")
    gateway_rate_burst: int = Field(default=200, ge=1)
    gateway_address_rate_per_s: float = Field(
        default=200.0, description="Requests per second per client address, all credentials (0: none; behind a proxy)."
    )
    gateway_address_burst: int = Field(default=1000, ge=1)
    gateway_max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="Larger request bodies get 413.")
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: Path | None = None

    @property
    def vault_database(self) -> str:
        return self.vault_url or f"sqlite:///{(self.home / 'vault.sqlite3').resolve()}"

    @property
    def audit_anchor_database(self) -> str:
        return self.audit_anchor_url or f"sqlite:///{(self.home / 'audit-anchor.sqlite3').resolve()}"

    @property
    def tokens_database(self) -> str:
        """Issued token ids and the revocation list."""
        return self.tokens_url or f"sqlite:///{(self.home / 'tokens.sqlite3').resolve()}"

    @property
    def read_model_database(self) -> str:
        return self.read_model_url or f"sqlite:///{(self.home / 'read-models.sqlite3').resolve()}"

    @property
    def state_file(self) -> Path:
        """This worker instance's stage state (adapters/sql/state.py)."""
        instance = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.instance_id)
        return (self.state_dir or self.home / "state").resolve() / f"worker-{instance}.sqlite3"

    @property
    def registry_database(self) -> str:
        return self.registry_url or f"sqlite:///{(self.home / 'registry.sqlite3').resolve()}"

    def kafka_options(self) -> dict[str, object]:
        """Client security options for Apache Kafka (TLS, SASL); empty for plaintext loopback."""
        options: dict[str, object] = {}
        if self.kafka_security_protocol != "PLAINTEXT":
            options["security_protocol"] = self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_ssl_cafile:
            import ssl

            options["ssl_context"] = ssl.create_default_context(cafile=str(self.kafka_ssl_cafile))
        return options
