"""Envelope cryptography: per-field AES-GCM bound to report and path, X25519 key wrapping, Ed25519.

Formats (also in docs/integration.md, with a test vector):
- sealed field  = nonce(12) || AES-256-GCM(data_key, nonce, utf8(value), aad)
  aad           = b"tiphub/v1|" + report_id + b"|" + field_path
- wrapped key   = nonce(12) || AES-256-GCM(kek, nonce, data_key, b"tiphub/wrap/v1|" + report_id)
  kek           = HKDF-SHA256(X25519(ephemeral, hub), salt = ephemeral_pub || hub_pub,
                              info = b"tiphub/wrap/v1|" + report_id)
"""

from __future__ import annotations

import hashlib
import secrets

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12
KEY_BYTES = 32


class DecryptionError(ValueError):
    """A sealed value that does not open: wrong key, tampered, or moved to another field or report."""


def field_aad(report_id: str, path: str) -> bytes:
    return b"tiphub/v1|" + report_id.encode() + b"|" + path.encode()


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def seal(key: bytes, plaintext: bytes, aad: bytes, nonce: bytes | None = None) -> bytes:
    """`nonce` is for conformance test vectors only: a repeated nonce under one key breaks AES-GCM."""
    nonce = nonce or secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < NONCE_BYTES + 16:
        raise DecryptionError("sealed value too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise DecryptionError("sealed value does not open (tampered, moved or wrong key)") from None


def seal_field(key: bytes, report_id: str, path: str, value: str, nonce: bytes | None = None) -> bytes:
    return seal(key, value.encode(), field_aad(report_id, path), nonce)


def unseal_field(key: bytes, report_id: str, path: str, blob: bytes) -> str:
    return unseal(key, blob, field_aad(report_id, path)).decode()


def _wrap_context(report_id: str) -> bytes:
    return b"tiphub/wrap/v1|" + report_id.encode()


def _kek(shared: bytes, ephemeral_pub: bytes, hub_pub: bytes, report_id: str) -> bytes:
    return HKDF(
        algorithm=SHA256(),
        length=KEY_BYTES,
        salt=ephemeral_pub + hub_pub,
        info=_wrap_context(report_id),
    ).derive(shared)


def wrap_data_key(
    hub_public: X25519PublicKey,
    report_id: str,
    data_key: bytes,
    ephemeral: X25519PrivateKey | None = None,
    nonce: bytes | None = None,
) -> tuple[bytes, bytes]:
    """Wrap `data_key` for the hub. Returns (ephemeral public key, wrapped key).

    `ephemeral` and `nonce` are for conformance test vectors only."""
    ephemeral = ephemeral or X25519PrivateKey.generate()
    ephemeral_pub = public_bytes(ephemeral.public_key())
    hub_pub = public_bytes(hub_public)
    kek = _kek(ephemeral.exchange(hub_public), ephemeral_pub, hub_pub, report_id)
    return ephemeral_pub, seal(kek, data_key, _wrap_context(report_id), nonce)


def unwrap_data_key(hub_private: X25519PrivateKey, report_id: str, ephemeral_pub: bytes, wrapped: bytes) -> bytes:
    try:
        peer = X25519PublicKey.from_public_bytes(ephemeral_pub)
        shared = hub_private.exchange(peer)
    except ValueError:
        raise DecryptionError("ephemeral public key is not a valid X25519 key") from None
    hub_pub = public_bytes(hub_private.public_key())
    key = unseal(_kek(shared, ephemeral_pub, hub_pub, report_id), wrapped, _wrap_context(report_id))
    if len(key) != KEY_BYTES:
        raise DecryptionError("wrapped data key has the wrong length")
    return key


def public_bytes(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_fingerprint(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    return key.sign(message)


def verify(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True
