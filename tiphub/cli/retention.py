"""`tiphub retention`: crypto-shred what is past its retention period."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from adapters.kafka.topic_io import KafkaTopicIO
from tiphub.cli.options import BrokerOpt, HomeOpt, PrefixOpt, settings_from
from tiphub.cli.terminal import out
from tiphub.container import Container

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

    from schemas.convert import parse_timestamp
    from streams.retention import RetentionPolicy, sweep_retention
    from tiphub.runtime import resolve_broker, topics_for

    settings = settings_from(broker, home, topic_prefix)
    as_of = parse_timestamp(now) if now else datetime.now(UTC)
    log = KafkaTopicIO(resolve_broker(settings), settings.kafka_options())
    vault = Container(settings).vault
    policy = RetentionPolicy.load()
    result = asyncio.run(sweep_retention(log, topics_for(settings), vault, policy, as_of))
    out.print(f"retention sweep: {len(result.subject_key_ids)} key(s) past retention, {result.keys_deleted} destroyed")
