"""Rotating the hub's vault KEK and linkage key while the hub runs, and retiring the earlier ones once
nothing needs them (`tiphub keys ...`)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from adapters.kafka.feeds import read_decoded
from adapters.sql.vault import SqlKeyVault
from domain.linkage import stranded_by_retiring
from domain.ports import KeyVault
from streams.topics import Topics
from tiphub.keys import KeyStore

ACCEPTED = "tiphub.AcceptedReport"


class RetirementRefused(Exception):
    """A key the hub will not retire now; the subclass says why."""


class NoSuchKey(RetirementRefused):
    """No earlier key of that id or version is live."""


class KeyIsCurrent(RetirementRefused):
    """The key is the current one: rotate first."""


class KeyStillNeeded(RetirementRefused):
    """Something still needs the key: `count` data keys it wraps, or readable reports only it links."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


@dataclass(frozen=True)
class VaultRewrapped:
    rewrapped: int
    total: int
    left: int  # data keys still wrapped with a previous KEK


def rewrap_vault(vault: SqlKeyVault) -> VaultRewrapped:
    """Wrap every data key in the vault with the current KEK (idempotent, while the hub runs)."""
    rewrapped, total = vault.rewrap()
    return VaultRewrapped(rewrapped, total, vault.wrapped_with_previous())


def retire_vault_kek(store: KeyStore, vault: SqlKeyVault, kek_id: str) -> None:
    """Delete previous vault KEK `kek_id`; refused (KeyStillNeeded) while any data key is still wrapped with
    a previous KEK. Vault backups wrapped with it become unreadable."""
    left = vault.wrapped_with_previous()
    if left:
        raise KeyStillNeeded(left)
    if not store.retire_vault_kek(kek_id):
        raise NoSuchKey(kek_id)


@dataclass(frozen=True)
class LinkageRotated:
    version: int  # current from the workers' next batch
    earlier: list[int]  # still live: new reports carry them too (bridged) until they are retired


def rotate_linkage_key(store: KeyStore) -> LinkageRotated:
    version = store.rotate_linkage_key()
    return LinkageRotated(version, sorted(v for v in store.linkage_keys() if v != version))


def retire_linkage_key(
    store: KeyStore, version: int, stranded: Callable[[int, Collection[int]], list[str]] | None
) -> None:
    """Delete earlier linkage key `version`. Refused for a version not live (NoSuchKey) or the current one
    (KeyIsCurrent); and, unless `stranded` is None (forced, e.g. the key is compromised), while readable
    reports carry no other live version (KeyStillNeeded): new reports would link with them only through
    a report bridged during the overlap. `stranded(version, live)` names those reports; it is asked only
    once the other checks pass."""
    live = store.linkage_keys()
    if version not in live:
        raise NoSuchKey(f"v{version}")
    if version == max(live):
        raise KeyIsCurrent(f"v{version}")
    if stranded is not None and (reports := stranded(version, set(live))):
        raise KeyStillNeeded(len(reports))
    store.retire_linkage_key(version)


async def reports_stranded_by_retiring(
    bootstrap: str,
    topics: Topics,
    vault: KeyVault,
    version: int,
    live: Collection[int],
    client_options: dict[str, Any] | None = None,
) -> list[str]:
    """Report ids on tip.reports.accepted, still readable, that carry linkage key `version` and no other
    live one."""
    accepted = await read_decoded(bootstrap, topics.accepted, topics.partitions, client_options, expect=ACCEPTED)
    return stranded_by_retiring(accepted, version, live, lambda key_id: vault.get(key_id) is not None)
