"""Agency signing keys as the hub names and trusts them."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.crypto import key_fingerprint, public_bytes

RELAY_AGENCY = "HUB-GATEWAY"  # registry owner of the gateway's relay key: trusted only for the publisher's agency


def agency_key_id(agency: str, public: Ed25519PublicKey) -> str:
    return f"{agency}/{key_fingerprint(public_bytes(public))}"


@dataclass(frozen=True)
class RegisteredKey:
    key_id: str
    agency: str
    public_key: Ed25519PublicKey
    created_at: float
    revoked_at: float | None

    def revoked_by(self, at: float) -> bool:
        return self.revoked_at is not None and at >= self.revoked_at
