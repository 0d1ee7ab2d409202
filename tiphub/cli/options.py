"""The options every command shares (CONTRACT section 6: --broker everywhere) and the settings they make."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tiphub.settings import Settings

# CONTRACT section 6: every command takes --broker; those that need no broker accept and ignore it.
BrokerOpt = Annotated[
    str | None,
    typer.Option("--broker", envvar="TIPHUB_BROKER", help="Kafka host:port; default: embedded broker."),
]
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", envvar="TIPHUB_HOME", help="State directory (default ./.tiphub)."),
]
PrefixOpt = Annotated[str | None, typer.Option("--topic-prefix", envvar="TIPHUB_TOPIC_PREFIX", hidden=True)]


def settings_from(
    broker: str | None = None,
    home: Path | None = None,
    topic_prefix: str | None = None,
    **more: Any,
) -> Settings:
    overrides: dict[str, Any] = {
        k: v for k, v in {"broker": broker, "home": home, "topic_prefix": topic_prefix, **more}.items() if v is not None
    }
    return Settings(**overrides)
