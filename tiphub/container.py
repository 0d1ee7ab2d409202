"""The one place that builds adapters: each from settings, once per process, when first asked for.

Commands, the worker and the gateway take what they need from a `Container` instead of building
their own stores, so a store is configured in one place and a test can build the same wiring on a
temporary TIPHUB_HOME."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from adapters.sql.anchors import AnchorStore
from adapters.sql.database import Database
from adapters.sql.registry import KeyRegistry
from adapters.sql.state import SqlStageState, open_state_database
from adapters.sql.tables import SqlTables
from adapters.sql.tokens import TokenAuthority
from adapters.sql.vault import SqlKeyVault
from domain.envelope_keys import EnvelopeKeys
from schemas.codec import WireCodec
from streams.topics import Topics
from tiphub.keys import KeyStore
from tiphub.settings import Settings


@dataclass
class Container:
    settings: Settings
    _databases: list[Database] = field(default_factory=list, repr=False)

    def _database(self, url: str) -> Database:
        db = Database(url)
        self._databases.append(db)
        return db

    @cached_property
    def keys(self) -> KeyStore:
        """Key material on disk under TIPHUB_HOME/keys."""
        return KeyStore(self.settings.home)

    @cached_property
    def topics(self) -> Topics:
        return Topics(self.settings.topic_prefix, self.settings.partitions)

    @cached_property
    def codec(self) -> WireCodec:
        return WireCodec()

    @cached_property
    def vault(self) -> SqlKeyVault:
        """The key vault; KEKs are read again on rotation (`KeyStore.vault_keks`)."""
        return SqlKeyVault(self._database(self.settings.vault_database), self.keys.vault_keks)

    @cached_property
    def registry(self) -> KeyRegistry:
        return KeyRegistry(self._database(self.settings.registry_database))

    @cached_property
    def anchors(self) -> AnchorStore:
        return AnchorStore(self._database(self.settings.audit_anchor_database))

    @cached_property
    def state_database(self) -> Database:
        """This worker instance's stage state file (settings.state_file)."""
        db = open_state_database(self.settings.state_file)
        self._databases.append(db)
        return db

    def stage_state(self, stage: str, version: int) -> SqlStageState:
        """Stage `stage`'s durable state, its entries in format `version`."""
        return SqlStageState(self.state_database, stage, version)

    def stage_tables(self, stage: str) -> SqlTables:
        """Stage `stage`'s tables, in the same file (domain/working_set.py)."""
        return SqlTables(self.state_database, stage)

    @cached_property
    def envelope_keys(self) -> EnvelopeKeys:
        return EnvelopeKeys(self.vault, self.settings.envelope_epoch_s)

    @cached_property
    def tokens(self) -> TokenAuthority:
        """The gateway's token issuer and verifier (creates the token key on first use)."""
        if not self.keys.token_signing_path.exists():
            self.keys.init(agencies=())
        key = self.keys.token_signing_key()
        return TokenAuthority(key, key.public_key(), self._database(self.settings.tokens_database))

    def close(self) -> None:
        for db in self._databases:
            db.close()
        self._databases.clear()
