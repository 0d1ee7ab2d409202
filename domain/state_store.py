"""A stage's durable state: what it folded from the partitions of a topic, kept with the position it reflects.

Kafka Streams keeps a task's state in a local store and a checkpoint file of changelog offsets; eventsourcing's
process applications write a projection and its tracking position in one database transaction. This port is
the second: `commit` writes a partition's entries and its `Checkpoint` in one transaction, so the state is
always exactly "the records below the checkpoint, folded" (or, for the accept stage, a superset of them that
is still a subset of the topic: see streams/checkpointed.py). A stage restores from its checkpoint plus the
tail of the topic, not from the beginning of history.

Entries are text, never pickled objects: a state file can hold wrong data, but it cannot run code. Each
stage names the version of its entries' format; a store holding another version (or a store layout this
release does not know) is wiped and rebuilt from the topics, never read.

Adapters: adapters/sql/state.py (SQLite, one file per worker instance), adapters/memory/state.py (the twin);
one contract suite: tests/unit/test_state_store.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from domain.log import TopicPartition

NO_RECORD = -1


@dataclass(frozen=True)
class Checkpoint:
    """Where a partition's state stands on its topic.

    `position`: every committed record of the partition below this offset is in the state. `last_offset` and
    `last_digest`: the last record the state holds (NO_RECORD: none) and a digest of its key and value. A
    restore reads the tail from that record and checks it is still there: a topic deleted and created again
    under the same name has other records at that offset, and the state is then wiped and rebuilt."""

    position: int
    last_offset: int = NO_RECORD
    last_digest: str = ""

    def advanced(self, other: Checkpoint) -> Checkpoint:
        """The later of two checkpoints of one partition: a checkpoint never moves back but by a wipe."""
        return other if other.position > self.position else self


ORIGIN = Checkpoint(0)


def record_digest(key: bytes | None, value: bytes | None) -> str:
    """What identifies a record at an offset: SHA-256 of its key and value, truncated to 128 bits."""
    digest = hashlib.sha256()
    for part in (key, value):
        digest.update(b"\x00" if part is None else b"\x01" + len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class Entry:
    """One fact of a partition's state: `value` filed under (`key`, `item`); `tag` names what deletes it (the
    subject an erasure removes), or is empty."""

    key: str
    value: str
    item: str = ""
    tag: str = ""


class StageState(Protocol):
    """One stage's durable state on this worker, per topic partition. Every method is one transaction."""

    def checkpoint(self, tp: TopicPartition) -> Checkpoint | None:
        """Where the partition's state stands; None: there is none (never restored here, or wiped)."""

    def get(self, tp: TopicPartition, keys: Collection[str]) -> dict[str, dict[str, str]]:
        """The entries filed under these keys, as key -> item -> value (keys without entries left out)."""

    def commit(self, tp: TopicPartition, entries: Sequence[Entry], checkpoint: Checkpoint) -> None:
        """Add `entries` (an entry whose key and item are held already keeps its first value) and set the
        partition's checkpoint, atomically: after a crash the store holds both or neither."""

    def delete_tagged(self, tags: Collection[str]) -> int:
        """Delete the entries of every partition carrying one of these tags (an erasure); returns how many."""

    def wipe(self, tp: TopicPartition) -> None:
        """Forget the partition's entries and checkpoint: the next restore rebuilds it from offset 0."""

    def size(self, tp: TopicPartition) -> int:
        """How many entries the partition holds."""
