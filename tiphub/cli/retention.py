"""`tiphub retention`: crypto-shred what is past its retention period."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from tiphub.cli.options import BrokerOpt, HomeOpt, PrefixOpt, settings_from
from tiphub.cli.terminal import out

app = typer.Typer(no_args_is_help=True, help="Retention of what the hub can read.")


@app.command("sweep")
def retention_sweep(
    now: Annotated[str | None, typer.Option("--now", help="Sweep as of this time (RFC 3339); default now.")] = None,
    broker: BrokerOpt = None,
    home: HomeOpt = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Crypto-shred the keys of every report past its retention period (policies/retention.yaml)."""
    from datetime import UTC, datetime

    import yaml

    from policies.loader import AGREEMENTS_DIR
    from schemas.convert import parse_timestamp
    from streams.erasure import erase_keys, expired_key_ids
    from streams.feeds import read_decoded
    from tiphub.database import Database
    from tiphub.keys import KeyStore
    from tiphub.runtime import resolve_broker, topics_for
    from tiphub.vault import SqlKeyVault

    settings = settings_from(broker, home, topic_prefix)
    bootstrap = resolve_broker(settings)
    topics = topics_for(settings)
    policy = yaml.safe_load((AGREEMENTS_DIR.parent / "retention.yaml").read_text())

    def decoded(topic: str) -> list[dict[str, Any]]:
        return asyncio.run(read_decoded(bootstrap, topic, settings.partitions, settings.kafka_options()))

    erased = {fact["subject_key_id"] for fact in decoded(topics.erasures)}
    expired = expired_key_ids(
        decoded(topics.accepted), policy, parse_timestamp(now) if now else datetime.now(UTC), erased
    )
    vault = SqlKeyVault(Database(settings.vault_database), KeyStore(settings.home).vault_keks)
    result = asyncio.run(
        erase_keys(
            bootstrap,
            topics,
            vault,
            expired,
            reason="retention period ended",
            requested_by="retention-sweep",
            client_options=settings.kafka_options(),
        )
    )
    out.print(f"retention sweep: {len(result.subject_key_ids)} key(s) past retention, {result.keys_deleted} destroyed")
