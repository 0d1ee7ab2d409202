"""The stage state store's in-memory twin (domain/state_store.py): forgotten when the process ends."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from domain.log import TopicPartition
from domain.state_store import Checkpoint, Entry


class InMemoryStageState:
    def __init__(self) -> None:
        self.entries: dict[TopicPartition, dict[tuple[str, str], Entry]] = {}
        self.checkpoints: dict[TopicPartition, Checkpoint] = {}
        self.commits = 0

    def checkpoint(self, tp: TopicPartition) -> Checkpoint | None:
        return self.checkpoints.get(tp)

    def get(self, tp: TopicPartition, keys: Collection[str]) -> dict[str, dict[str, str]]:
        wanted = set(keys)
        out: dict[str, dict[str, str]] = {}
        for (key, item), entry in self.entries.get(tp, {}).items():
            if key in wanted:
                out.setdefault(key, {})[item] = entry.value
        return out

    def commit(self, tp: TopicPartition, entries: Sequence[Entry], checkpoint: Checkpoint) -> None:
        # All or nothing, as the SQL store's transaction: check everything before changing anything.
        if not all(isinstance(v, str) for e in entries for v in (e.key, e.item, e.value, e.tag)):
            raise TypeError("state entries are text")
        held = self.entries.setdefault(tp, {})
        for entry in entries:
            held.setdefault((entry.key, entry.item), entry)
        self.checkpoints[tp] = checkpoint
        self.commits += 1

    def delete_tagged(self, tags: Collection[str]) -> int:
        gone = set(tags)
        deleted = 0
        for held in self.entries.values():
            for ref in [ref for ref, entry in held.items() if entry.tag and entry.tag in gone]:
                del held[ref]
                deleted += 1
        return deleted

    def wipe(self, tp: TopicPartition) -> None:
        self.entries.pop(tp, None)
        self.checkpoints.pop(tp, None)

    def size(self, tp: TopicPartition) -> int:
        return len(self.entries.get(tp, {}))
