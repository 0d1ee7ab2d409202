"""Kafka client behaviour the hub relies on whatever the broker: empty fetches are paced, and an empty
group assignment is an assignment of nothing (`harden()` installs both).

A consumer with nothing to read sends a fetch and expects the broker to hold it for up to
`fetch_max_wait_ms` until data arrives (Apache Kafka does). noida-db answers an empty fetch at
once, so aiokafka's background fetcher spins: measured here, 828 fetches a second and 40% of a
core for one idle consumer, and a worker holds about ten consumers (docs/performance.md).

`pace_empty_fetches` makes an empty answer that came back faster than the pause wait out the
rest of it before the next fetch to that broker. The pause starts small and doubles while fetches
stay empty (2 ms up to 50 ms), and resets as soon as data arrives, so a busy stream is not slowed
and an idle one costs next to nothing. On Apache Kafka an empty fetch already took
`fetch_max_wait_ms` (longer than any pause), so nothing changes there.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

MIN_PAUSE_S = 0.002
MAX_PAUSE_S = 0.050
_installed: list[Any] = []


def pace_empty_fetches(min_pause_s: float = MIN_PAUSE_S, max_pause_s: float = MAX_PAUSE_S) -> None:
    """Install the pacing in this process (idempotent). Call it before any consumer starts."""
    if _installed:
        return
    original = Fetcher._proc_fetch_request

    async def paced(self: Fetcher, assignment: Any, node_id: int, request: Any) -> bool:
        started = time.monotonic()
        try:
            has_data: bool = await original(self, assignment, node_id, request)
        except asyncio.CancelledError:
            # aiokafka cancels pending fetches on close and awaits them; it guards the send against
            # that, but not its own retry backoff after a failed fetch (a broker away). Answer as the
            # send path does, or close() raises and takes its caller down with it.
            return False
        pauses: dict[int, float] = self.__dict__.setdefault("_tiphub_empty_pause", {})
        if has_data:
            pauses[node_id] = 0.0
            return has_data
        pause = min(max_pause_s, max(min_pause_s, pauses.get(node_id, 0.0) * 2))
        pauses[node_id] = pause
        remaining = pause - (time.monotonic() - started)
        if remaining > 0:
            # The node counts as in flight until this returns: no other fetch goes to it meanwhile.
            try:
                await asyncio.sleep(remaining)
            except asyncio.CancelledError:
                return False  # as the original does: close() and unassignment cancel fetches and await them
        return has_data

    Fetcher._proc_fetch_request = paced
    _installed.append(original)


def accept_empty_assignments() -> None:
    """A SyncGroup answer with empty assignment bytes means "no partitions" (the Java client reads it so).

    noida-db sends one when two workers join at once; aiokafka fails to decode it, its group
    coordinator task dies, and that stage of the worker stalls without a word. Idempotent."""
    if getattr(ConsumerProtocolMemberAssignment, "_tiphub_empty_ok", False):
        return
    original = ConsumerProtocolMemberAssignment.decode

    def decode(data: Any) -> Any:
        if isinstance(data, bytes | bytearray) and len(data) == 0:
            return ConsumerProtocolMemberAssignment(0, [], b"")
        return original(data)

    ConsumerProtocolMemberAssignment.decode = staticmethod(decode)  # type: ignore[method-assign,assignment]
    ConsumerProtocolMemberAssignment._tiphub_empty_ok = True  # type: ignore[attr-defined]


def harden() -> None:
    """Install this module's client fixes in this process, before any consumer starts."""
    pace_empty_fetches()
    accept_empty_assignments()
