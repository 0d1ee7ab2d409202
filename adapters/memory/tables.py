"""The union stage's tables' in-memory twin (domain/working_set.py `TableStore`): forgotten when the process ends."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from domain.log import TopicPartition
from domain.state_store import Checkpoint


class InMemoryTables:
    def __init__(self) -> None:
        self.tables: dict[str, dict[str, str]] = {}
        self.held_positions: dict[TopicPartition, Checkpoint] = {}
        self.writes = 0

    def load(self, table: str, keys: Collection[str]) -> dict[str, str]:
        held = self.tables.get(table, {})
        return {key: held[key] for key in keys if key in held}

    def keys(self, table: str) -> list[str]:
        return list(self.tables.get(table, {}))

    def keys_below(self, table: str, bound: str) -> list[str]:
        return sorted(k for k in self.tables.get(table, {}) if k < bound)

    def write(
        self, changes: Sequence[tuple[str, str, str | None]], positions: Mapping[TopicPartition, Checkpoint]
    ) -> None:
        for table, key, value in changes:
            if value is None:
                self.tables.get(table, {}).pop(key, None)
            else:
                self.tables.setdefault(table, {})[key] = value
        self.held_positions = dict(positions)
        self.writes += 1

    def positions(self) -> dict[TopicPartition, Checkpoint]:
        return dict(self.held_positions)

    def compact_log(self) -> None:
        return None  # no log

    def clear(self) -> None:
        self.tables, self.held_positions = {}, {}
