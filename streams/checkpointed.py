"""State restored from a checkpoint plus the tail of a topic (domain/state_store.py), for the stages whose
state is a fold of one partition: the accept stage's accepted ids (a fold of its own output,
tip.reports.accepted) and the link stage's key index (a fold of its input, tip.sightings, up to the
group's commit).

`replay_tail` brings a partition's state from its checkpoint to `stop`: it reads the record the checkpoint
was taken after and checks it is the same one (a topic deleted and created again has other records
there), reads on from the checkpoint in chunks, and commits each chunk's entries with the checkpoint it
reaches, so a restore killed half-way keeps what it did. A checkpoint beyond `stop` or a record that is not
the one it was taken after means the state is not of this topic's history: the partition is wiped and
rebuilt from offset 0, and the log says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from domain.log import LogReader, LogRecord, TopicPartition
from domain.state_store import NO_RECORD, ORIGIN, Checkpoint, Entry, StageState, record_digest

log = logging.getLogger(__name__)
CHUNK_OFFSETS = 20_000  # offsets read, folded and committed at a time while restoring


@dataclass(frozen=True)
class Replayed:
    """What a restore did: where it started (`origin`, None for the beginning), how many records it read
    and folded (`replayed`), the checkpoint it reached, and why it wiped what was stored ("" if it did not)."""

    origin: Checkpoint | None
    replayed: int
    checkpoint: Checkpoint
    wiped: str = ""

    def describe(self, what: str, tp: TopicPartition) -> str:
        start = "from the beginning" if self.origin is None else f"from checkpoint at {self.origin.position}"
        wiped = f" (stored state wiped: {self.wiped})" if self.wiped else ""
        return f"restored {what} of {tp.topic}[{tp.partition}] {start}: {self.replayed} records replayed{wiped}"


def checkpoint_after(record: LogRecord, position: int) -> Checkpoint:
    """The checkpoint of a state that holds every record below `position`, `record` the last of them."""
    return Checkpoint(position, record.offset, record_digest(record.key, record.value))


async def taken_after(reader: LogReader, tp: TopicPartition, held: Checkpoint) -> bool:
    """Whether the record the checkpoint was taken after is still at its offset."""
    if held.last_offset == NO_RECORD:
        return True
    records = await reader.read({tp: held.last_offset + 1}, {tp: held.last_offset})
    return bool(records) and (
        records[0].offset == held.last_offset and record_digest(records[0].key, records[0].value) == held.last_digest
    )


async def replay_tail(
    state: StageState,
    reader: LogReader,
    tp: TopicPartition,
    stop: int,
    fold: Callable[[LogRecord], Sequence[Entry]],
    *,
    chunk: int = CHUNK_OFFSETS,
) -> Replayed:
    """Bring the state of `tp` up to `stop` (exclusive): the entries `fold` makes of each record from the
    checkpoint on. `fold` must be idempotent (an entry already held keeps its first value)."""
    held = state.checkpoint(tp)
    wiped = ""
    if held is not None and held.position > stop:
        wiped = f"its checkpoint at {held.position} is beyond the end {stop} (topic recreated or offsets reset)"
    elif held is not None and not await taken_after(reader, tp, held):
        wiped = f"the record at offset {held.last_offset} is not the one it was taken after (topic recreated?)"
    if wiped:
        log.warning("state of %s[%d]: %s; rebuilding it from offset 0", tp.topic, tp.partition, wiped)
        state.wipe(tp)
        held = None
    checkpoint = held or ORIGIN
    replayed = 0
    while checkpoint.position < stop:
        upto = min(checkpoint.position + chunk, stop)
        records = await reader.read({tp: upto}, {tp: checkpoint.position})
        entries = [entry for record in records for entry in fold(record)]
        checkpoint = checkpoint_after(records[-1], upto) if records else Checkpoint(upto, *_last(checkpoint))
        state.commit(tp, entries, checkpoint)
        replayed += len(records)
    if held is None and checkpoint == ORIGIN:
        state.commit(tp, [], ORIGIN)  # an empty partition: its state exists now, at 0
    return Replayed(held, replayed, checkpoint, wiped)


def _last(checkpoint: Checkpoint) -> tuple[int, str]:
    return checkpoint.last_offset, checkpoint.last_digest
