"""aiokafka patches for noida-db's defects: empty fetches are paced, an empty group assignment is an
assignment of nothing, and an aborted transaction that has visibly ended skips nothing after its end.
The only module that patches aiokafka; `BrokerQuirks.install` (adapters/kafka/broker_quirks.py) installs
them for noida-db and for no other broker kind.

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
import logging
import time
from typing import Any

from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.record.control_record import ABORT_MARKER, ControlRecord

log = logging.getLogger(__name__)

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


class _RecordsWithBytes:
    """aiokafka's MemoryRecords, keeping the fetched bytes so that they can be scanned twice."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._records = _MEMORY_RECORDS(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._records, name)


_MEMORY_RECORDS = aiokafka_fetcher.MemoryRecords


def ended_before(aborted: list[tuple[int, int]], fetch_offset: int, data: bytes) -> list[tuple[int, int]]:
    """The aborted transactions a fetch answer lists that visibly ended before `fetch_offset`.

    A transaction ends at its producer's next control marker. Apache Kafka lists only aborted
    transactions that reach into the fetched range. noida-db lists every aborted transaction of the
    partition, also ones whose abort marker lies before the fetch offset; and after a restart it
    hands the same producer id out again. The client then skips every later batch of that producer
    id, committed ones included, until an abort marker that never comes (measured: a broker restart
    lost 665 audit entries that way, docs/reliability.md).

    An entry that starts before the fetch offset is either the transaction the fetch starts inside
    (its producer's next marker in the answer aborts), or one that ended before (the next marker
    commits: the batches before it belong to a later, committed transaction). With no marker of
    that producer in the answer, the entry is kept, as Kafka means it.
    """
    early = {pid for pid, first in aborted if first < fetch_offset}
    if not early:
        return []
    next_marker: dict[int, bool] = {}  # producer id -> its first marker in the answer aborts
    records = _MEMORY_RECORDS(data)
    while records.has_next() and len(next_marker) < len(early):
        batch = records.next_batch()
        pid = batch.producer_id
        if pid in early and pid not in next_marker and batch.is_control_batch:
            next_marker[pid] = any(ControlRecord.parse(r.key) == ABORT_MARKER for r in batch)
    return [(pid, first) for pid, first in aborted if first < fetch_offset and next_marker.get(pid) is False]


def ignore_ended_aborts() -> None:
    """Install `ended_before` in this process's read-committed fetches (idempotent)."""
    if getattr(aiokafka_fetcher.PartitionRecords, "_tiphub_ended_aborts", False):
        return
    original = aiokafka_fetcher.PartitionRecords.__init__

    def init(self: Any, tp: Any, records: Any, aborted: Any, fetch_offset: int, *rest: Any) -> None:
        if aborted and isinstance(records, _RecordsWithBytes):
            ended = ended_before(list(aborted), fetch_offset, records.data)
            if ended:
                log.info(
                    "%s: ignoring %d aborted transaction(s) that ended before offset %d", tp, len(ended), fetch_offset
                )
                aborted = [entry for entry in aborted if entry not in ended]
        original(self, tp, records, aborted, fetch_offset, *rest)

    aiokafka_fetcher.MemoryRecords = _RecordsWithBytes  # type: ignore[misc,assignment]
    aiokafka_fetcher.PartitionRecords.__init__ = init  # type: ignore[method-assign]
    aiokafka_fetcher.PartitionRecords._tiphub_ended_aborts = True  # type: ignore[attr-defined]


STOP_PATIENCE_S = 5.0
_stopping_alone: set[asyncio.Future[None]] = set()  # stops whose caller was cancelled, still watched


async def stop_consumer(consumer: Any, patience_s: float = STOP_PATIENCE_S) -> None:
    """`consumer.stop()`, on any broker, that cannot hang on a cancel aiokafka swallowed.

    aiokafka's fetch routine, when an assignment changes, cancels its requests in flight and awaits each under
    `suppress(CancelledError)` (consumer/fetcher.py, 0.14.0). A stop that cancels the routine at that moment
    (a request to a broker just killed is slow to end) is swallowed with theirs: the routine loops on, and
    `Fetcher.close()` awaits it for ever. Seen in the controller-kill test: the audit stage's restore reader
    never stopped and the stage never took another batch. A stop still waiting after `patience_s` cancels the
    routine again, now at its wait, where the cancel ends it. A caller cancelled meanwhile is let go at once;
    the stop goes on being watched. A CancelledError that escapes aiokafka's close (one of its requests was
    cancelled in its retry pause) while nobody cancelled the caller is logged, not raised: the consumer is
    stopped as far as aiokafka lets it be."""
    stopping = asyncio.ensure_future(consumer.stop())
    try:
        await _watch(stopping, consumer, patience_s)
    except asyncio.CancelledError:
        if not stopping.done():
            watcher = asyncio.ensure_future(_watch(stopping, consumer, patience_s))
            _stopping_alone.add(watcher)
            watcher.add_done_callback(_stopping_alone.discard)
        raise
    try:
        stopping.result()
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        log.warning("a consumer's stop ended in a cancel left inside aiokafka; its connections may stay open")


async def _watch(stopping: asyncio.Future[None], consumer: Any, patience_s: float) -> None:
    """Wait for a stop; while it waits longer than `patience_s`, cancel the consumer's fetch routine again."""
    while True:
        done, _ = await asyncio.wait({stopping}, timeout=patience_s)
        if done:
            if stopping.cancelled() or stopping.exception() is not None:
                log.info("a consumer's stop ended in %s", "a cancel" if stopping.cancelled() else stopping.exception())
            return
        fetcher = getattr(consumer, "_fetcher", None)
        routine = getattr(fetcher, "_fetch_task", None)
        if routine is not None and not routine.done() and getattr(fetcher, "_closed", True):
            log.warning(
                "a consumer's stop waited %.0f s for its fetch routine; cancelling the routine again", patience_s
            )
            routine.cancel()
