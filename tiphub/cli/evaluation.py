"""`tiphub eval`: score the hub's signals against a simulation's truth."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tiphub.cli.options import BrokerOpt, HomeOpt, PrefixOpt, settings_from
from tiphub.cli.terminal import out


def evaluate(
    truth: Annotated[
        Path, typer.Option("--truth", exists=True, dir_okay=False, help="From `tiphub simulate --truth`.")
    ],
    broker: BrokerOpt = None,
    home: HomeOpt = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Score the signals on tip.signals against a simulation's truth: precision, recall, F1 per requirement."""
    from streams.agents.correlate_signals import signal_from_record
    from streams.correlate import evaluate_against_truth
    from streams.feeds import read_decoded
    from streams.scoped import HUB_SCOPE
    from tiphub.runtime import resolve_broker, topics_for

    settings = settings_from(broker, home, topic_prefix)
    bootstrap = resolve_broker(settings)
    records = asyncio.run(
        read_decoded(
            bootstrap,
            topics_for(settings).signals,
            settings.partitions,
            settings.kafka_options(),
            expect="tiphub.Signal",
        )
    )
    latest: dict[str, tuple[int, Any]] = {}
    hub_scope = [r for r in records if r.get("scope", HUB_SCOPE) == HUB_SCOPE]  # every report; the others are subsets
    for version, signal in map(signal_from_record, hub_scope):
        if version > latest.get(signal.signal_id, (0, None))[0]:
            latest[signal.signal_id] = (version, signal)
    scores = evaluate_against_truth([s for _, s in latest.values()], json.loads(truth.read_text())["requirements"])
    table = Table("requirement", "signals", "true sets", "matched", "precision", "recall", "F1")
    for requirement, row in scores.items():
        table.add_row(
            requirement,
            str(row["signals"]),
            str(row["truth"]),
            str(row["matched"]),
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
        )
    out.print(table)
    out.print(json.dumps(scores))
