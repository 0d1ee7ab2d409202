"""The gateway's start: what it started is stopped when it stops, and when a later start fails half-way."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from gateway.state import start_in_order


class Service:
    """A service twin that records its starts and stops in one shared log, and can fail to start."""

    def __init__(self, name: str, log: list[str], fails: bool = False) -> None:
        self.name, self.log, self.fails = name, log, fails

    async def start(self) -> None:
        self.log.append(f"start {self.name}")
        if self.fails:
            raise ConnectionError(f"{self.name} cannot reach the broker")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")


def test_a_start_that_fails_stops_itself_and_everything_started_before_it_in_reverse_order() -> None:
    log: list[str] = []

    async def run() -> None:
        async with AsyncExitStack() as stack:
            await start_in_order(stack, Service("producer", log), Service("tail", log, fails=True))
            log.append("serving")  # never reached

    with pytest.raises(ConnectionError):
        asyncio.run(run())
    assert log == ["start producer", "start tail", "stop tail", "stop producer"]


def test_what_started_is_stopped_in_reverse_order_when_the_gateway_stops() -> None:
    log: list[str] = []

    async def run() -> None:
        async with AsyncExitStack() as stack:
            await start_in_order(stack, Service("producer", log), Service("tail", log))
            log.append("serving")

    asyncio.run(run())
    assert log == ["start producer", "start tail", "serving", "stop tail", "stop producer"]
