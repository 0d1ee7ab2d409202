"""`tiphub eval`: score the hub's signals against a simulation's truth."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from adapters.kafka.topic_io import KafkaTopicIO
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
    from streams.evaluation import evaluate_signals
    from tiphub.runtime import resolve_broker, topics_for

    requirements = json.loads(truth.read_text())["requirements"]
    settings = settings_from(broker, home, topic_prefix)
    bootstrap = resolve_broker(settings)
    scores = asyncio.run(
        evaluate_signals(KafkaTopicIO(bootstrap, settings.kafka_options()), topics_for(settings), requirements)
    )
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
    # One line a script can parse, never wrapped to the terminal's width.
    out.print(json.dumps(scores), soft_wrap=True, highlight=False)
