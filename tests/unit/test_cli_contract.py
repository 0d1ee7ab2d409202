"""The command line keeps CONTRACT section 6: its commands exist and every one takes --broker."""

from __future__ import annotations

from typing import Any

import typer

from tiphub.cli import app


def commands(group: Any, prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    if hasattr(group, "commands"):  # typer's group class is not click's in every release
        for name, command in group.commands.items():
            found.update(commands(command, f"{prefix}{name} "))
    else:
        found[prefix.strip()] = group
    return found


def test_every_command_takes_broker() -> None:
    found = commands(typer.main.get_command(app))
    missing = [name for name, command in found.items() if not any("--broker" in p.opts for p in command.params)]
    assert missing == []


def test_the_contract_commands_built_so_far_exist() -> None:
    found = commands(typer.main.get_command(app))
    # `token issue` arrives with the gateway (issue 5), `bench` with issue 6.
    for name in ("up", "publish", "simulate", "worker", "gateway", "audit verify", "keys init", "eval"):
        assert name in found, name
