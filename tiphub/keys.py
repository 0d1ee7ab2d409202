"""Key material on disk under TIPHUB_HOME/keys (files 0600) and the agency public-key registry."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from domain.crypto import key_fingerprint, public_bytes
from domain.linkage import CURRENT_ENCODING, ENCODINGS, LEGACY_ENCODING, LinkageKey

DEMO_AGENCIES = ("NZ-CUSTOMS", "NZ-IMMIGRATION", "NZ-DIA", "NZ-LABOUR", "NZ-POLICE", "NGO-SHAKTI")


def _write_secret(path: Path, data: bytes) -> None:
    """Create a key file readable only by its owner; never overwrite one. Whole or not at all: written to a
    temporary file, flushed to disk, then linked in under its name (a crash mid-write leaves no partial key,
    which could otherwise be read as another key: 32 bytes of a longer file pass for a legacy linkage key)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)  # FileExistsError if a key is there: never overwritten
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


LINKAGE_HEADER = b"tiphub linkage key, encoding "


def linkage_key_file(encoding: int, secret: bytes) -> bytes:
    """A linkage key file: a one-line header naming the encoding it derives with, then the 32-byte secret.
    The encoding travels with the secret (a copied or restored key keeps it); a file of exactly 32 bytes
    is a key made before encodings were versioned, and derives with encoding 1."""
    return LINKAGE_HEADER + str(encoding).encode() + b"\n" + secret


def read_linkage_key(path: Path) -> LinkageKey:
    """A linkage key file as `linkage_key_file` writes it, or a legacy 32-byte key (encoding 1). A legacy key
    beside a `.encoding` file is one a development build made (it kept the encoding there): that file is
    honoured, so the key goes on deriving what it derived."""
    data = path.read_bytes()
    if len(data) == 32 and not data.startswith(LINKAGE_HEADER[:8]):
        sidecar = path.with_suffix(".encoding")
        if not sidecar.exists():
            return LinkageKey(data, LEGACY_ENCODING)
        written = sidecar.read_text().strip()
        if not written.isdigit() or int(written) not in ENCODINGS:
            raise ValueError(f"{sidecar}: {written!r} is not a known linkage encoding")
        return LinkageKey(data, int(written))
    header, newline, secret = data.partition(b"\n")
    known = ", ".join(map(str, sorted(ENCODINGS)))
    if not header.startswith(LINKAGE_HEADER) or not newline or len(secret) != 32:
        raise ValueError(
            f"{path}: not a linkage key (32 bytes, or the line '{LINKAGE_HEADER.decode()}N' then 32 bytes)"
        )
    encoding = header.removeprefix(LINKAGE_HEADER)
    if not encoding.isdigit() or int(encoding) not in ENCODINGS:
        raise ValueError(f"{path}: encoding {encoding.decode(errors='replace')!r} is not a known one ({known})")
    return LinkageKey(secret, int(encoding))


def _hub_key_id(key: X25519PrivateKey) -> str:
    return "hub/" + key_fingerprint(public_bytes(key.public_key()))


def _pem(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_ed25519(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


class KeyStore:
    """The hub's own secrets (encryption, signing, linkage, vault) and demo agency keys."""

    def __init__(self, home: Path) -> None:
        self.dir = home / "keys"

    @property
    def hub_encryption_path(self) -> Path:
        return self.dir / "hub" / "x25519.pem"

    @property
    def hub_signing_path(self) -> Path:
        return self.dir / "hub" / "ed25519.pem"

    @property
    def relay_signing_path(self) -> Path:
        """The gateway's relay key: signs envelopes for publishers who post over HTTP (never an agency's key)."""
        return self.dir / "hub" / "relay-ed25519.pem"

    def relay_signing_key(self) -> Ed25519PrivateKey:
        return load_ed25519(self.relay_signing_path)

    @property
    def cursor_key_path(self) -> Path:
        """AES-256 key sealing the gateway's cursors (every gateway instance of a hub shares it)."""
        return self.dir / "hub" / "cursor-key.bin"

    @property
    def pseudonym_key_path(self) -> Path:
        """HMAC key of the per-scope signal ids and entity pseudonyms (only the correlation stage reads it)."""
        return self.dir / "hub" / "pseudonym-key.bin"

    def pseudonym_key(self) -> bytes:
        if not self.pseudonym_key_path.exists():
            raise FileNotFoundError(f"no pseudonym key at {self.pseudonym_key_path}: run `tiphub keys init`")
        return self.pseudonym_key_path.read_bytes()

    @property
    def token_signing_path(self) -> Path:
        """The gateway's bearer-token key: separate from the audit signing key, so either can rotate alone."""
        return self.dir / "hub" / "tokens-ed25519.pem"

    def token_signing_key(self) -> Ed25519PrivateKey:
        return load_ed25519(self.token_signing_path)

    @property
    def audit_mac_path(self) -> Path:
        """HMAC-SHA256 key authenticating each tip.audit entry: held by the hub, never by a writer of the topic."""
        return self.dir / "hub" / "audit-mac.bin"

    def audit_mac_key(self) -> bytes:
        if not self.audit_mac_path.exists():
            raise FileNotFoundError(f"no audit MAC key at {self.audit_mac_path}: run `tiphub keys init`")
        return self.audit_mac_path.read_bytes()

    @property
    def vault_kek_path(self) -> Path:
        return self.dir / "hub" / "vault-kek.bin"

    def linkage_path(self, version: int) -> Path:
        return self.dir / "hub" / f"linkage-v{version}.bin"

    def _new_linkage_key(self, version: int) -> None:
        _write_secret(self.linkage_path(version), linkage_key_file(CURRENT_ENCODING, secrets.token_bytes(32)))

    def agency_path(self, agency: str) -> Path:
        return self.dir / "agencies" / f"{agency}.pem"

    def init(self, agencies: tuple[str, ...] = DEMO_AGENCIES) -> list[Path]:
        """Create whatever is missing; existing keys are never touched. Returns the files created."""
        created: list[Path] = []

        def ensure(path: Path, make: bytes) -> None:
            if not path.exists():
                _write_secret(path, make)
                created.append(path)

        ensure(self.hub_encryption_path, _pem(X25519PrivateKey.generate()))
        ensure(self.hub_signing_path, _pem(Ed25519PrivateKey.generate()))
        ensure(self.token_signing_path, _pem(Ed25519PrivateKey.generate()))
        ensure(self.relay_signing_path, _pem(Ed25519PrivateKey.generate()))
        ensure(self.cursor_key_path, secrets.token_bytes(32))
        ensure(self.pseudonym_key_path, secrets.token_bytes(32))
        ensure(self.vault_kek_path, secrets.token_bytes(32))
        ensure(self.audit_mac_path, secrets.token_bytes(32))
        if not any(self.dir.glob("hub/linkage-v*.bin")):
            self._new_linkage_key(1)
            created.append(self.linkage_path(1))
        for agency in agencies:
            ensure(self.agency_path(agency), _pem(Ed25519PrivateKey.generate()))
        return created

    def hub_encryption_key(self) -> X25519PrivateKey:
        key = serialization.load_pem_private_key(self.hub_encryption_path.read_bytes(), password=None)
        if not isinstance(key, X25519PrivateKey):
            raise ValueError(f"{self.hub_encryption_path} is not an X25519 private key")
        return key

    def hub_key_id(self) -> str:
        return _hub_key_id(self.hub_encryption_key())

    @property
    def previous_hub_dir(self) -> Path:
        """Hub encryption keys replaced by a rotation, kept until retired: envelopes sealed for them still open."""
        return self.dir / "hub" / "previous"

    def hub_decryption_keys(self) -> dict[str, X25519PrivateKey]:
        """The current hub key and every previous one not yet retired, by key id."""
        keys = [self.hub_encryption_key()]
        for path in sorted(self.previous_hub_dir.glob("*.pem")):
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(key, X25519PrivateKey):
                keys.append(key)
        return {_hub_key_id(key): key for key in keys}

    def rotate_hub_key(self) -> tuple[str, str]:
        """A new current hub key; the old one moves to previous/ and keeps opening what was sealed for it.

        Returns (old id, new id). Key files are never overwritten: the new key is written beside the
        current one first, then the two are moved into place."""
        old = self.hub_encryption_key()
        old_id = _hub_key_id(old)
        new = X25519PrivateKey.generate()
        staged = self.hub_encryption_path.with_suffix(".new")
        _write_secret(staged, _pem(new))
        self.previous_hub_dir.mkdir(mode=0o700, exist_ok=True)
        os.replace(self.hub_encryption_path, self.previous_hub_dir / f"{old_id.removeprefix('hub/')}.pem")
        os.replace(staged, self.hub_encryption_path)
        return old_id, _hub_key_id(new)

    def retire_hub_key(self, key_id: str) -> bool:
        """Delete a previous hub key: envelopes still sealed for it will be refused (wrong_hub_key)."""
        path = self.previous_hub_dir / f"{key_id.removeprefix('hub/')}.pem"
        if not path.exists():
            return False
        path.unlink()
        return True

    def hub_signing_key(self) -> Ed25519PrivateKey:
        return load_ed25519(self.hub_signing_path)

    def hub_signing_key_id(self) -> str:
        return "hub-signing/" + key_fingerprint(public_bytes(self.hub_signing_key().public_key()))

    def vault_kek(self) -> bytes:
        return self.vault_kek_path.read_bytes()

    @staticmethod
    def kek_id(kek: bytes) -> str:
        """A name for a KEK that reveals nothing of it: the start of its SHA-256."""
        return "kek/" + hashlib.sha256(b"tiphub/vault-kek-id|" + kek).hexdigest()[:16]

    def _previous_kek_path(self, kek_id: str) -> Path:
        return self.previous_hub_dir / f"vault-kek-{kek_id.removeprefix('kek/')}.bin"

    def vault_keks(self) -> list[bytes]:
        """The current vault KEK first, then every previous one not yet retired."""
        previous = [path.read_bytes() for path in sorted(self.previous_hub_dir.glob("vault-kek-*.bin"))]
        return [self.vault_kek(), *previous]

    def rotate_vault_kek(self) -> tuple[str, str]:
        """A new current vault KEK; the old one moves to previous/ and keeps opening what it wrapped
        until `tiphub keys rewrap-vault` has wrapped every data key anew. Returns (old id, new id)."""
        old = self.vault_kek()
        new = secrets.token_bytes(32)
        staged = self.vault_kek_path.with_suffix(".new")
        _write_secret(staged, new)
        self.previous_hub_dir.mkdir(mode=0o700, exist_ok=True)
        os.replace(self.vault_kek_path, self._previous_kek_path(self.kek_id(old)))
        os.replace(staged, self.vault_kek_path)
        return self.kek_id(old), self.kek_id(new)

    def retire_vault_kek(self, kek_id: str) -> bool:
        """Delete a previous vault KEK. Vault backups wrapped with it become unreadable."""
        path = self._previous_kek_path(kek_id)
        if not path.exists():
            return False
        path.unlink()
        return True

    def linkage_keys(self) -> dict[int, LinkageKey]:
        """Every live linkage key version, with the encoding it derives with."""
        keys = {}
        for path in self.dir.glob("hub/linkage-v*.bin"):
            version = int(path.stem.removeprefix("linkage-v"))
            keys[version] = read_linkage_key(path)
        if not keys:
            raise FileNotFoundError(f"no linkage key under {self.dir / 'hub'}: run `tiphub keys init`")
        return keys

    def rotate_linkage_key(self) -> int:
        """A new linkage key version, which becomes current; earlier versions stay live (bridged) until retired."""
        version = max(self.linkage_keys()) + 1
        self._new_linkage_key(version)
        return version

    def retire_linkage_key(self, version: int) -> bool:
        """Delete an earlier linkage key version. The current one cannot be retired: rotate first."""
        keys = self.linkage_keys()
        if version == max(keys):
            raise ValueError(f"linkage key v{version} is the current one: rotate before retiring it")
        if version not in keys:
            return False
        self.linkage_path(version).unlink()
        self.linkage_path(version).with_suffix(".encoding").unlink(missing_ok=True)  # a development build's
        return True

    def agency_key(self, agency: str) -> Ed25519PrivateKey:
        path = self.agency_path(agency)
        if not path.exists():
            raise FileNotFoundError(f"no key for agency {agency} at {path}")
        return load_ed25519(path)

    def agencies(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("agencies/*.pem"))
