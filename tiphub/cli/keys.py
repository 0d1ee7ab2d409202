"""`tiphub keys`: the hub's keys and the agencies' signing keys, and their rotation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tiphub.cli.options import BrokerOpt, HomeOpt, PrefixOpt, settings_from
from tiphub.cli.terminal import console, out
from tiphub.container import Container

app = typer.Typer(no_args_is_help=True, help="Hub and agency keys.")


@app.command("init")
def keys_init(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Create the hub's keys and demo agency keys (idempotent; never overwrites)."""
    from tiphub.runtime import init_keys

    settings = settings_from(home=home)
    setup = init_keys(settings)
    for path in setup.created:
        out.print(f"created {path}")
    out.print(
        f"{len(setup.created)} key file(s) created under {settings.home / 'keys'}; "
        f"{len(setup.registered)} agency key(s) registered"
    )


@app.command("list")
def keys_list(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Agency keys in the registry, with their revocation state."""

    registry = Container(settings_from(home=home)).registry
    table = Table("key id", "agency", "state")
    for key in sorted(registry.all(), key=lambda k: k.key_id):
        table.add_row(key.key_id, key.agency, "revoked" if key.revoked_at else "active")
    out.print(table)


@app.command("revoke")
def keys_revoke(key_id: str, home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Revoke an agency key: submissions signed with it are rejected from now on."""

    if not Container(settings_from(home=home)).registry.revoke(key_id):
        console.print(f"[red]no active key {key_id}[/red]")
        raise typer.Exit(1)
    out.print(f"revoked {key_id}")


@app.command("register")
def keys_register(
    agency: Annotated[str, typer.Option("--agency", help="The agency the key signs for.")],
    public_key: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Its Ed25519 public key (PEM).")],
    home: HomeOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Register an agency's new signing key beside its current one (rotation: revoke the old one after)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = serialization.load_pem_public_key(public_key.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        console.print("[red]not an Ed25519 public key[/red]")
        raise typer.Exit(1)
    key_id = Container(settings_from(home=home)).registry.register(agency, key)
    out.print(f"registered {key_id}")


@app.command("rotate-hub")
def keys_rotate_hub(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """A new hub encryption key. Envelopes sealed for the previous one still open until it is retired."""
    from tiphub.keys import KeyStore

    old, new = KeyStore(settings_from(home=home).home).rotate_hub_key()
    out.print(f"hub key {new} is current; {old} still opens what was sealed for it (retire it with retire-hub)")


@app.command("retire-hub")
def keys_retire_hub(key_id: str, home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Delete a previous hub key: envelopes still sealed for it are refused (wrong_hub_key) from then on."""
    from tiphub.keys import KeyStore

    if not KeyStore(settings_from(home=home).home).retire_hub_key(key_id):
        console.print(f"[red]no previous hub key {key_id}[/red]")
        raise typer.Exit(1)
    out.print(f"retired {key_id}")


@app.command("rotate-vault-kek")
def keys_rotate_vault_kek(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """A new vault KEK. Keys wrapped with the previous one still open until rewrap-vault has run."""
    from tiphub.keys import KeyStore

    old, new = KeyStore(settings_from(home=home).home).rotate_vault_kek()
    out.print(
        f"vault KEK {new} is current; {old} still opens what it wrapped. In 30 s every process has read it: "
        "then run `tiphub keys rewrap-vault`, and retire-vault-kek once it reports nothing left"
    )


@app.command("rewrap-vault")
def keys_rewrap_vault(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Wrap every data key in the vault with the current KEK (idempotent, while the hub runs)."""
    from tiphub.key_rotation import rewrap_vault

    settings = settings_from(home=home)
    done = rewrap_vault(Container(settings).vault)
    out.print(f"re-wrapped {done.rewrapped} of {done.total} data key(s); {done.left} still wrapped with a previous KEK")


@app.command("retire-vault-kek")
def keys_retire_vault_kek(kek_id: str, home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """Delete a previous vault KEK once no data key needs it. Vault backups wrapped with it become unreadable."""
    from tiphub.key_rotation import KeyStillNeeded, NoSuchKey, retire_vault_kek
    from tiphub.keys import KeyStore

    settings = settings_from(home=home)
    store = KeyStore(settings.home)
    try:
        retire_vault_kek(store, Container(settings).vault, kek_id)
    except KeyStillNeeded as exc:
        console.print(
            f"[red]{exc.count} data key(s) are still wrapped with a previous KEK: run rewrap-vault first[/red]"
        )
        raise typer.Exit(1) from None
    except NoSuchKey:
        console.print(f"[red]no previous vault KEK {kek_id}[/red]")
        raise typer.Exit(1) from None
    out.print(f"retired {kek_id}")


@app.command("rotate-linkage")
def keys_rotate_linkage(home: HomeOpt = None, broker: BrokerOpt = None) -> None:
    """A new linkage key version. Until the earlier ones are retired, new reports carry both (bridged)."""
    from tiphub.key_rotation import rotate_linkage_key
    from tiphub.keys import KeyStore

    settings = settings_from(home=home)
    store = KeyStore(settings.home)
    rotated = rotate_linkage_key(store)
    live = store.linkage_keys()
    earlier = ", ".join(f"v{v} (encoding {live[v].encoding})" for v in rotated.earlier)
    out.print(
        f"linkage key v{rotated.version} (encoding {live[rotated.version].encoding}) is current from the next "
        f"batch (within {settings.key_reload_s:.0f} s); {earlier} still bridge old and new reports until retired "
        "(retire-linkage)"
    )


@app.command("retire-linkage")
def keys_retire_linkage(
    version: int,
    force: Annotated[
        bool, typer.Option("--force", help="Retire even if readable reports carry no other live version.")
    ] = False,
    home: HomeOpt = None,
    broker: BrokerOpt = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Delete an earlier linkage key version, after checking which reports would lose direct linkage."""
    from collections.abc import Collection

    from tiphub.key_rotation import (
        KeyIsCurrent,
        KeyStillNeeded,
        NoSuchKey,
        reports_stranded_by_retiring,
        retire_linkage_key,
    )
    from tiphub.keys import KeyStore
    from tiphub.runtime import resolve_broker, topics_for

    settings = settings_from(broker, home, topic_prefix)
    store = KeyStore(settings.home)

    def stranded(retiring: int, live: Collection[int]) -> list[str]:
        # Asked only once the version may be retired, and not with --force: the broker and vault open then.
        bootstrap = resolve_broker(settings)
        vault = Container(settings).vault
        topics = topics_for(settings)
        return asyncio.run(
            reports_stranded_by_retiring(bootstrap, topics, vault, retiring, live, settings.kafka_options())
        )

    try:
        retire_linkage_key(store, version, None if force else stranded)
    except NoSuchKey:
        console.print(f"[red]no live linkage key v{version}[/red]")
        raise typer.Exit(1) from None
    except KeyIsCurrent:
        console.print(f"[red]linkage key v{version} is the current one: rotate-linkage first[/red]")
        raise typer.Exit(1) from None
    except KeyStillNeeded as exc:
        console.print(
            f"[red]{exc.count} readable report(s) carry linkage key v{version} only: after retiring it, "
            "new reports link with them only through a report bridged during the overlap. Keep the "
            "overlap until retention expires them, or give --force (e.g. the key is compromised).[/red]"
        )
        raise typer.Exit(1) from None
    out.print(f"retired linkage key v{version}; workers stop deriving it within {settings.key_reload_s:.0f} s")
