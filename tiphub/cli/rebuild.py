"""`tiphub rebuild`: recompute a derived view beside the live one and compare them."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer

from tiphub.cli.options import BrokerOpt, HomeOpt, PrefixOpt, settings_from
from tiphub.cli.terminal import console, log_to_stderr


def rebuild(
    view: Annotated[str, typer.Argument(help="decisions or signals")],
    drop: Annotated[bool, typer.Option("--drop", help="Delete the rebuilt topics after comparing.")] = False,
    broker: BrokerOpt = None,
    home: HomeOpt = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Recompute a derived view from its source topics, from scratch and honouring every erasure, beside
    the live one (under a new topic prefix), and compare the two; prints one JSON object."""
    from tiphub.rebuild import VIEWS
    from tiphub.rebuild import rebuild as run_rebuild
    from tiphub.runtime import resolve_broker

    if view not in VIEWS:
        console.print(f"[red]no view {view!r}: choose one of {', '.join(sorted(VIEWS))}[/red]")
        raise typer.Exit(2)
    log_to_stderr()
    logging.getLogger().setLevel(logging.WARNING)
    settings = settings_from(broker, home, topic_prefix)
    result = run_rebuild(view, settings, resolve_broker(settings), drop=drop)
    print(json.dumps(result))
