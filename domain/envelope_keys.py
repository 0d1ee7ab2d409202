"""Hub envelope keys per epoch: what agencies seal their submissions for, destroyed once not needed.

A submitted envelope opens with the hub's envelope key for the epoch it was sealed in (one hour by
default). Epoch keys live in the key vault (X25519 private keys, wrapped by the vault KEK like every
data key) and are destroyed once their epoch is over, the envelope age limit has passed (no envelope
sealed for the epoch can still be accepted) and the verify stage has read every record that was on
tip.reports.submitted by then. So an envelope, and any copy of it in a broker's replicas or backups,
is unreadable about two hours after it was signed, whether or not anyone asked for an erasure; the
hub keeps what it needs only re-sealed under per-person keys that an erasure destroys.

Agencies fetch the current and next epoch's public keys from the gateway (`GET /v1/hub/keys`); the
hub's own publishers (the relay, the simulator, `tiphub publish`) read them from the vault.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from domain.crypto import key_fingerprint, public_bytes
from domain.ports import KeyRequest, KeyVault

KEY_ID_PREFIX = "hub-epoch/"  # envelope hub_key_id: hub-epoch/<epoch>/<fingerprint>
VAULT_OWNER = "hub-envelope-keys"  # the vault's report_id column for these keys


def _vault_id(epoch: int) -> str:
    return f"envelope/{epoch}"


@dataclass(frozen=True)
class PublishedKey:
    key_id: str
    public_key: X25519PublicKey
    not_before: datetime
    not_after: datetime


class EnvelopeKeys:
    def __init__(self, vault: KeyVault, epoch_s: float) -> None:
        if epoch_s <= 0:
            raise ValueError("the envelope key epoch must be positive")
        self.vault = vault
        self.epoch_s = epoch_s
        self._published: dict[int, PublishedKey] = {}  # public keys only: nothing secret is kept here

    def epoch(self, at: datetime) -> int:
        return int(at.timestamp() // self.epoch_s)

    def bounds(self, epoch: int) -> tuple[datetime, datetime]:
        start = datetime.fromtimestamp(epoch * self.epoch_s, UTC)
        return start, start + timedelta(seconds=self.epoch_s)

    def published(self, epoch: int) -> PublishedKey:
        """The public key of an epoch, made (once) if it does not exist yet."""
        found = self._published.get(epoch)
        if found is None:
            raw = self.vault.get_or_create_many([KeyRequest(_vault_id(epoch), VAULT_OWNER)])[_vault_id(epoch)]
            public = X25519PrivateKey.from_private_bytes(raw).public_key()
            start, end = self.bounds(epoch)
            key_id = f"{KEY_ID_PREFIX}{epoch}/{key_fingerprint(public_bytes(public))}"
            found = self._published[epoch] = PublishedKey(key_id, public, start, end)
            for old in [e for e in self._published if e < epoch - 1]:
                del self._published[old]
        return found

    def current(self, at: datetime | None = None) -> tuple[str, X25519PublicKey]:
        key = self.published(self.epoch(at or datetime.now(UTC)))
        return key.key_id, key.public_key

    def offered(self, at: datetime | None = None) -> list[PublishedKey]:
        """What agencies should hold: this epoch's key and the next one's (so a clock at the boundary works)."""
        epoch = self.epoch(at or datetime.now(UTC))
        return [self.published(epoch), self.published(epoch + 1)]

    @staticmethod
    def is_epoch_key(key_id: str) -> bool:
        return key_id.startswith(KEY_ID_PREFIX)

    def private(self, key_id: str) -> X25519PrivateKey | None:
        """The private key an envelope names, if the hub still holds it; never makes one."""
        epoch_text, _, fingerprint = key_id.removeprefix(KEY_ID_PREFIX).partition("/")
        if not epoch_text.isdigit():
            return None
        raw = self.vault.get(_vault_id(int(epoch_text)))
        if raw is None:
            return None
        key = X25519PrivateKey.from_private_bytes(raw)
        return key if key_fingerprint(public_bytes(key.public_key())) == fingerprint else None

    def held(self) -> list[int]:
        """The epochs whose key the vault still holds."""
        return sorted(int(k.removeprefix("envelope/")) for k in self.vault.key_ids_of(VAULT_OWNER))

    def expired(self, now: datetime, keep_s: float) -> list[int]:
        """Epochs over for longer than `keep_s` (the envelope age limit and clock skew)."""
        return [e for e in self.held() if self.bounds(e)[1] + timedelta(seconds=keep_s) < now]

    def destroy(self, epoch: int) -> bool:
        return self.vault.delete([_vault_id(epoch)]) > 0
