"""Builds submitted envelopes by hand, including broken ones, the way a faulty or hostile client would."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from adapters.sql.database import Database
from adapters.sql.vault import SqlKeyVault
from domain import crypto
from domain.envelope_keys import EnvelopeKeys
from domain.signing import agency_key_id
from producers.publisher import seal_report
from schemas.codec import WireCodec
from schemas.convert import report_from_json
from schemas.envelope import SUBMITTED, signing_bytes
from tiphub.keys import KeyStore
from tiphub.settings import Settings


class EnvelopeKit:
    def __init__(self, home: Any, epoch: bool = True) -> None:
        """`epoch`: seal for the hub's envelope key of the current epoch, from the home's vault, as an agency
        that fetched it does (what a worker opens by default); otherwise for the static hub key on disk."""
        self.store = KeyStore(home)
        self.codec = WireCodec()
        if epoch:
            vault = SqlKeyVault(Database(Settings(home=home).vault_database), self.store.vault_keks)
            self.hub_key_id, self.hub_public = EnvelopeKeys(vault, Settings().envelope_epoch_s).current()
        else:
            self.hub_public = self.store.hub_encryption_key().public_key()
            self.hub_key_id = self.store.hub_key_id()

    def envelope(
        self,
        report_json: dict[str, Any],
        agency: str | None = None,
        key: Ed25519PrivateKey | None = None,
        signed_at: datetime | None = None,
        hub_public: Any = None,
        envelope_schema: Any = None,
    ) -> dict[str, Any]:
        """`envelope_schema`: a SubmittedReport version to sign for, as an older agency SDK would."""
        agency = agency or report_json["source_agency"]
        key = key or self.store.agency_key(agency)
        return seal_report(
            report_from_json(report_json) if isinstance(report_json["observed_at"], str) else report_json,
            agency_key=key,
            signing_key_id=agency_key_id(agency, key.public_key()),
            hub_public=hub_public or self.hub_public,
            hub_key_id=self.hub_key_id,
            signed_at=signed_at or datetime.now(UTC),
            envelope_schema=envelope_schema,
        )

    def resign(self, envelope: dict[str, Any], key: Ed25519PrivateKey, schema: Any = SUBMITTED) -> dict[str, Any]:
        """Sign an edited envelope again, as a buggy agency system would (for `schema`'s version)."""
        envelope = {**envelope, "signature": b""}
        envelope["signature"] = crypto.sign(key, signing_bytes(envelope, schema))
        return envelope

    def wire(self, envelope: dict[str, Any], schema: Any = None) -> tuple[bytes, bytes]:
        """(key, value), encoded with `schema` (a SubmittedReport version; default the latest)."""
        value = self.codec.encode_with(schema, envelope) if schema else self.codec.encode(SUBMITTED, envelope)
        return envelope["report_id"].encode(), value

    @staticmethod
    def with_schema_id(value: bytes, schema_id: int) -> bytes:
        return value[:1] + struct.pack(">I", schema_id) + value[5:]


def hours_ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def stranger_hub_key() -> Any:
    return X25519PrivateKey.generate().public_key()
