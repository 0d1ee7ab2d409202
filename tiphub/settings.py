"""Settings from the environment (TIPHUB_*) and the command line; passed in, never read at import."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.callers import ROLES


class Settings(BaseSettings):
    # hide_input_in_errors: a bad setting's error must not echo the secrets read with it (client secret, SASL password)
    model_config = SettingsConfigDict(env_prefix="TIPHUB_", extra="ignore", hide_input_in_errors=True)

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
    gateway_public_origin: str | None = Field(
        default=None,
        description="The origin browsers reach the console at (https://hub.example.org) when a proxy in front "
        "terminates TLS: the session cookie is then Secure and a console request's Origin must be this one.",
        pattern=r"^https?://[^/\s]+$",
    )
    gateway_rate_per_s: float = Field(default=50.0, description="Requests per second per credential (0: none).")
    gateway_rate_burst: int = Field(default=200, ge=1)
    gateway_address_rate_per_s: float = Field(
        default=200.0, description="Requests per second per client address, all credentials (0: none; behind a proxy)."
    )
    gateway_address_burst: int = Field(default=1000, ge=1)
    gateway_max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="Larger request bodies get 413.")
    # The console's sign-in with OpenID Connect (gateway/oidc.py; docs/operations.md, "Console sign-in with OpenID
    # Connect"). Unset issuer: no such sign-in, only the hub's own tokens.
    oidc_issuer: str | None = Field(
        default=None,
        description="The identity provider's issuer URL (https; http only on a loopback address). Unset: no OpenID "
        "Connect sign-in.",
    )
    oidc_client_id: str | None = Field(default=None, description="The gateway's client id at the identity provider.")
    oidc_client_secret: SecretStr | None = Field(
        default=None,
        description="The client's secret (client_secret_basic); unset with no secret file: a public client, PKCE only.",
    )
    oidc_client_secret_file: Path | None = Field(
        default=None, description="A file holding the client's secret, so that none sits in the environment."
    )
    oidc_scopes: str = Field(
        default="openid", description="Scopes asked for, space-separated (openid is always asked for)."
    )
    oidc_redirect_uri: str | None = Field(
        default=None,
        description="The callback URL registered at the identity provider; unset: this gateway's "
        "/v1/session/oidc/callback as the request reached it (set it behind a reverse proxy).",
    )
    oidc_role_claim: str = Field(default="tiphub_role", description="The ID token claim naming the role (or groups).")
    oidc_role_map: dict[str, str] = Field(
        default_factory=dict,
        description='JSON: the role claim\'s values (a role name, a group) to tiphub roles, e.g. {"tip-analysts": '
        '"analyst"}; empty: the claim names tiphub roles itself.',
    )
    oidc_agency_claim: str = Field(default="tiphub_agency", description="The claim naming a domestic role's agency.")
    oidc_partner_claim: str = Field(default="tiphub_partner", description="The claim naming a liaison's partner.")
    oidc_subject_claim: str = Field(
        default="sub",
        description="The claim a session's subject is made of (oidc:VALUE): stable and pseudonymous, not an email.",
    )
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: Path | None = None

    @field_validator("gateway_public_origin")
    @classmethod
    def _origin_as_browsers_send_it(cls, origin: str | None) -> str | None:
        """An origin as a browser's Origin header names it: lower case, without the scheme's default port."""
        if origin is None:
            return None
        origin = origin.lower()
        for scheme, port in (("https://", ":443"), ("http://", ":80")):
            if origin.startswith(scheme) and origin.endswith(port):
                origin = origin.removesuffix(port)
        return origin

    @model_validator(mode="after")
    def _oidc_is_complete(self) -> Settings:
        """A half-configured sign-in is refused at start, naming the setting, not at a user's first sign-in."""
        if self.oidc_issuer is None:
            return self
        _check_url("TIPHUB_OIDC_ISSUER", self.oidc_issuer)
        if not self.oidc_client_id:
            raise ValueError("TIPHUB_OIDC_CLIENT_ID: required when TIPHUB_OIDC_ISSUER is set")
        if self.oidc_client_secret is not None and self.oidc_client_secret_file is not None:
            raise ValueError("TIPHUB_OIDC_CLIENT_SECRET and TIPHUB_OIDC_CLIENT_SECRET_FILE: give one, not both")
        if self.oidc_client_secret_file is not None and not self.oidc_client_secret_value():
            raise ValueError(f"TIPHUB_OIDC_CLIENT_SECRET_FILE: {self.oidc_client_secret_file} is missing or empty")
        if self.oidc_redirect_uri is not None:
            _check_url("TIPHUB_OIDC_REDIRECT_URI", self.oidc_redirect_uri)
        unknown = sorted(set(self.oidc_role_map.values()) - set(ROLES))
        if unknown:
            raise ValueError(f"TIPHUB_OIDC_ROLE_MAP: {', '.join(unknown)} not a role ({', '.join(ROLES)})")
        for name in ("role", "agency", "partner", "subject"):
            if not getattr(self, f"oidc_{name}_claim").strip():
                raise ValueError(f"TIPHUB_OIDC_{name.upper()}_CLAIM: must name a claim")
        return self

    def oidc_client_secret_value(self) -> str | None:
        """The OpenID Connect client's secret, from the setting or its file; None for a public client."""
        if self.oidc_client_secret is not None:
            return self.oidc_client_secret.get_secret_value()
        if self.oidc_client_secret_file is not None:
            try:
                return self.oidc_client_secret_file.read_text(encoding="utf-8").strip() or None
            except OSError:
                return None
        return None

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


def _check_url(setting: str, url: str) -> None:
    """An identity provider's URLs are https; plain http only to a loopback address (a test provider)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{setting}: {url!r} is not an absolute URL without query or fragment")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError(f"{setting}: must be https (plain http only to a loopback address)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
