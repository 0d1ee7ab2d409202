"""`tiphub audit`: verify the tamper-evident audit trail."""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table

from adapters.kafka.topic_io import KafkaTopicIO
from tiphub.cli.options import BrokerOpt, HomeOpt, PrefixOpt, settings_from
from tiphub.cli.terminal import out
from tiphub.container import Container

app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit.")


@app.command("verify")
def audit_verify(broker: BrokerOpt = None, home: HomeOpt = None, topic_prefix: PrefixOpt = None) -> None:
    """Walk every audit chain, check it against the latest signed anchor, name the first broken link,
    and list records the chaining stage did not write (foreign) and entries no checkpoint covers."""
    from streams.audit_trail import verify_audit_trail
    from tiphub.keys import KeyStore
    from tiphub.runtime import resolve_broker, topics_for

    settings = settings_from(broker, home, topic_prefix)
    log = KafkaTopicIO(resolve_broker(settings), settings.kafka_options())
    keys = KeyStore(settings.home)
    report = asyncio.run(
        verify_audit_trail(
            log,
            topics_for(settings),
            Container(settings).anchors,
            keys.hub_signing_key().public_key(),
            keys.audit_mac_key(),
        )
    )
    table = Table("partition", "entries", "checkpoints", "last seq", "anchor seq", "foreign", "unanchored", "result")
    for p in report.partitions:
        table.add_row(
            str(p.partition),
            str(p.entries),
            str(p.checkpoints),
            str(p.last_seq),
            "-" if p.anchor_seq is None else str(p.anchor_seq),
            str(len(p.foreign)),
            str(len(p.unanchored)),
            "ok" if p.ok else f"BROKEN: {p.problem}",
        )
    out.print(table)
    if not report.ok:
        raise typer.Exit(2)
    legacy = sum(p.legacy_entries for p in report.partitions)
    out.print(
        f"audit verified: {sum(p.entries for p in report.partitions)} entries in {len(report.partitions)} chains"
        + (f" ({legacy} from before entry MACs, vouched for by signed checkpoints)" if legacy else "")
    )
