"""A stage's state as tables of text on disk, worked on through a bounded cache: the union's state (issue 16).

Kafka Streams keeps a task's state in RocksDB and a bounded cache in front of it; a batch reads what it
touches, writes are held until the commit, and the process's memory follows the cache, not the history. Here
a `WorkingSet` does that for maps of Python values over a `TableStore` (adapters/sql/tables.py):
- `StoredMap` is a `MutableMapping` over one table: a key is read from the store the first time a batch asks
  for it, and kept in the cache; every key a batch changed (and every key of a map of mutable values it only
  read: it may have changed the value in place) is *pending* until `changes()` hands them to the store.
- `within(prefix, fresh=True)` says the store holds nothing under a prefix yet (a scope made in this batch):
  its maps answer a miss without a query until the next `saved()`.
- `changes()` gives what to write, `saved()` says it was written (the cache may now forget entries, the least
  recently first read or last written first, down to `cache_entries`), and `drop()` forgets every change since the last
  `saved()` (an aborted transaction): the next read takes the stored value again.
The store is written by whoever owns the positions the state reflects, in the same transaction: the state on
disk is always exactly a state Kafka committed, never ahead of it.

Values are text (JSON through a `Codec`), never pickled objects: a state file can hold wrong data, but it
cannot run code. Pure logic: the store is a port.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, MutableMapping, MutableSet, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from domain.log import TopicPartition
from domain.state_store import Checkpoint

V = TypeVar("V")
MISSING: Any = object()  # the cache's mark for a key the table does not hold (or a batch deleted)
DEFAULT_CACHE_ENTRIES = 50_000


class StateError(ValueError):
    """Stored state this release cannot read: wrong types, a missing field, malformed text."""


class TableStore(Protocol):
    """Committed tables of text values, and the input positions they reflect: what the last `write` left.
    Adapters: adapters/sql/tables.py (a worker's state file), adapters/memory/tables.py (the twin); one contract
    suite: tests/unit/test_table_store.py."""

    def load(self, table: str, keys: Collection[str]) -> dict[str, str]:
        """The values held under these keys of `table` (keys it does not hold left out)."""

    def keys(self, table: str) -> list[str]:
        """Every key `table` holds."""

    def keys_below(self, table: str, bound: str) -> list[str]:
        """The keys of `table` that sort before `bound` (by code point)."""

    def write(
        self, changes: Sequence[tuple[str, str, str | None]], positions: Mapping[TopicPartition, Checkpoint]
    ) -> None:
        """Apply `changes` (table, key, text; None deletes the key) and replace the positions, atomically: after
        a crash the store holds all of it or none of it."""

    def positions(self) -> dict[TopicPartition, Checkpoint]:
        """The positions of the last write ({}: never written, or cleared)."""

    def compact_log(self) -> None:
        """Overwrite what the last writes left of deleted and rewritten rows outside the tables (SQLite's
        write-ahead log keeps old pages until it is checkpointed and truncated): after an erasure."""

    def clear(self) -> None:
        """Forget every table and the positions: the state is rebuilt from the topics."""


@dataclass(frozen=True)
class Codec(Generic[V]):
    """How one table's values are written as text, and read back (StateError for anything malformed)."""

    encode: Callable[[V], str]
    decode: Callable[[str], V]


def _json_loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StateError(f"not JSON: {exc}") from exc


def _decode_texts(text: str) -> set[str]:
    value = _json_loads(text)
    if type(value) is not list or not all(type(v) is str for v in value):
        raise StateError("expected a list of texts")
    return set(value)


def _decode_text(text: str) -> str:
    value = _json_loads(text)
    if type(value) is not str:
        raise StateError("expected a text")
    return value


def _decode_int(text: str) -> int:
    value = _json_loads(text)
    if type(value) is not int:
        raise StateError("expected an integer")
    return value


def _decode_counts(text: str) -> Counter[str]:
    value = _json_loads(text)
    if type(value) is not dict or not all(type(v) is int for v in value.values()):
        raise StateError("expected counts")
    return Counter(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


TEXT_SET: Codec[set[str]] = Codec(lambda v: _dumps(sorted(v)), _decode_texts)
TEXT: Codec[str] = Codec(_dumps, _decode_text)
INTEGER: Codec[int] = Codec(_dumps, _decode_int)
COUNTS: Codec[Counter[str]] = Codec(lambda v: _dumps(dict(sorted(v.items()))), _decode_counts)
PRESENT: Codec[bool] = Codec(lambda v: "1", lambda text: True)


class Tables(Protocol):
    """Where a correlator's maps are kept: `map` gives the named one (made on first use)."""

    def map(
        self, name: str, codec: Codec[V], default: Callable[[], V] | None = None, *, mutable: bool = False
    ) -> MutableMapping[str, V]: ...


class WorkingSet:
    """The maps over one store, their cache and their pending changes (see the module's docstring)."""

    def __init__(self, store: TableStore, cache_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self.store = store
        self.cache_entries = cache_entries
        self.maps: dict[str, StoredMap[Any]] = {}
        # Cached and not pending, oldest first: in the order they were read or last written (a read of a clean
        # entry does not move it: what a batch changes is written and moves; what it only reads may be let go
        # and read again, which costs a read, never a wrong answer).
        self._clean: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._fresh: set[str] = set()  # prefixes the store holds nothing under (until the next saved())
        self.loads = 0  # keys read from the store (a measure of what a batch cost)

    def map(
        self, name: str, codec: Codec[V], default: Callable[[], V] | None = None, *, mutable: bool = False
    ) -> StoredMap[V]:
        held = self.maps.get(name)
        if held is None:
            held = self.maps[name] = StoredMap(self, name, codec, default, mutable)
            held.fresh = any(name.startswith(prefix) for prefix in self._fresh)
        return held

    def within(self, prefix: str, fresh: bool = False) -> Prefixed:
        """These tables under a prefix (one scope's maps). `fresh`: the store holds nothing under it (the
        caller knows: a scope its own committed rows do not name), so the maps made under it read nothing
        until the changes are saved."""
        if fresh:
            self._fresh.add(prefix)
        return Prefixed(self, prefix)

    def changes(self) -> list[tuple[str, str, str | None]]:
        """Every pending change as (table, key, text), text None for a deleted key; sorted. A key a batch only
        read (or set back to what it was) is left out: its value is what the store holds."""
        out = []
        for name, stored in sorted(self.maps.items()):
            for key in sorted(stored.pending):
                value = stored.cache[key]
                if _same(value, stored.originals.get(key, _UNCACHED)):
                    continue
                out.append((name, key, None if value is MISSING else stored.codec.encode(value)))
        return out

    def saved(self) -> None:
        """The changes are in the store: nothing is pending; the cache keeps the most recently used entries."""
        for name, stored in self.maps.items():
            for key in stored.pending:
                self._clean[(name, key)] = None
                self._clean.move_to_end((name, key))
            stored.pending, stored.originals = set(), {}
            stored.fresh = False
        self._fresh.clear()
        self._trim()

    def drop(self) -> None:
        """Forget every pending change (and the cache): the next read takes what the store holds."""
        for stored in self.maps.values():
            stored.cache.clear()
            stored.pending, stored.originals = set(), {}
            stored.fresh = False  # what reached the store since the last saved() is not known: read it
        self._fresh.clear()
        self._clean.clear()

    def cached(self) -> int:
        return sum(len(stored.cache) for stored in self.maps.values())

    def _loaded(self, name: str, key: str) -> None:
        self._clean[(name, key)] = None
        self.loads += 1

    def _pending(self, name: str, key: str) -> None:
        self._clean.pop((name, key), None)

    def _trim(self) -> None:
        while len(self._clean) > self.cache_entries:
            (name, key), _ = self._clean.popitem(last=False)
            self.maps[name].cache.pop(key, None)


class Prefixed:
    """A working set's tables under a name prefix."""

    def __init__(self, tables: WorkingSet, prefix: str) -> None:
        self.tables = tables
        self.prefix = prefix

    def map(
        self, name: str, codec: Codec[V], default: Callable[[], V] | None = None, *, mutable: bool = False
    ) -> StoredMap[V]:
        return self.tables.map(self.prefix + name, codec, default, mutable=mutable)


class StoredMap(MutableMapping[str, V]):
    """One table as a mapping (see the module's docstring). `default`: what a missing key reads as through
    `m[key]` (as a defaultdict), stored from then on. `mutable`: its values may be changed in place, so a
    read is a pending change too. A map of values changed in place must be declared mutable: else a change
    in place followed by `m[key] = value` is taken for no change, and not written."""

    def __init__(
        self, tables: WorkingSet, name: str, codec: Codec[V], default: Callable[[], V] | None, mutable: bool
    ) -> None:
        self.tables = tables
        self.name = name
        self.codec = codec
        self.default = default
        self.mutable = mutable
        self.cache: dict[str, Any] = {}
        self.pending: set[str] = set()
        self.originals: dict[str, Any] = {}  # pending key -> its value when it became pending (a copy)
        self.fresh = False  # the store holds nothing in this table (WorkingSet.within): a miss reads nothing

    def _fetch(self, key: str) -> Any:
        value = self.cache.get(key, _UNCACHED)
        if value is not _UNCACHED:
            return value
        return self._load(key)

    def _load(self, key: str) -> Any:
        """The stored value of a key not in the cache, cached (MISSING: the table does not hold it)."""
        if self.fresh:
            return MISSING  # not cached: a cached miss would be an entry the cache's bound never sees
        found = self.tables.store.load(self.name, (key,)).get(key)
        value = MISSING if found is None else self._decode(key, found)
        self.cache[key] = value
        self.tables._loaded(self.name, key)
        return value

    def prefetch(self, keys: Iterable[str]) -> None:
        """Read these keys in one query (a batch that knows what it will touch)."""
        if self.fresh:
            return
        wanted = [k for k in set(keys) if k not in self.cache]
        if not wanted:
            return
        found = self.tables.store.load(self.name, wanted)
        for key in wanted:
            text = found.get(key)
            self.cache[key] = MISSING if text is None else self._decode(key, text)
            self.tables._loaded(self.name, key)

    def _decode(self, key: str, text: str) -> V:
        """The value of a row; StateError, naming the table, for a row that is not what the table holds."""
        try:
            return self.codec.decode(text)
        except StateError as exc:
            raise StateError(f"table {self.name}: {exc}") from exc
        except (LookupError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"table {self.name}: malformed: {type(exc).__name__}: {exc}") from exc

    def _mark(self, key: str) -> None:
        """The key may change in this batch: called before it does, so its value now (the store's) is kept to
        compare with when the changes are written."""
        if key not in self.pending:
            self.pending.add(key)
            self.originals[key] = _frozen(self.cache.get(key, _UNCACHED))
            self.tables._pending(self.name, key)

    # The four below are on every batch's path: the cache hit is inline, and a key already pending is not
    # marked again.
    def __getitem__(self, key: str) -> V:
        value = self.cache.get(key, _UNCACHED)
        if value is _UNCACHED:
            value = self._load(key)
        if value is MISSING:
            if self.default is None:
                raise KeyError(key)
            self._mark(key)
            value = self.cache[key] = self.default()
        elif self.mutable and key not in self.pending:
            self._mark(key)
        return value  # type: ignore[no-any-return]

    def get(self, key: str, default: Any = None) -> Any:
        value = self.cache.get(key, _UNCACHED)
        if value is _UNCACHED:
            value = self._load(key)
        if value is MISSING:
            return default
        if self.mutable and key not in self.pending:
            self._mark(key)
        return value

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        value = self.cache.get(key, _UNCACHED)
        if value is _UNCACHED:
            value = self._load(key)
        return value is not MISSING

    def __setitem__(self, key: str, value: V) -> None:
        if key not in self.pending:
            self._mark(key)
        self.cache[key] = value

    def __delitem__(self, key: str) -> None:
        if self._fetch(key) is MISSING:
            raise KeyError(key)
        self._mark(key)
        self.cache[key] = MISSING

    def pop(self, key: str, *default: Any) -> Any:
        value = self._fetch(key)
        if value is MISSING:
            if default:
                return default[0]
            raise KeyError(key)
        self._mark(key)
        self.cache[key] = MISSING
        return value

    def setdefault(self, key: str, default: Any = None) -> Any:
        value = self._fetch(key)
        if value is MISSING:
            self[key] = default
            return default
        if self.mutable:
            self._mark(key)
        return value

    def __iter__(self) -> Iterator[str]:
        """The keys held: the store's, as the pending changes leave them. Reads the table's keys whole."""
        stored = [] if self.fresh else self.tables.store.keys(self.name)
        seen = set()
        for key in stored:
            if self.cache.get(key, None) is not MISSING:
                seen.add(key)
                yield key
        for key, value in list(self.cache.items()):
            if value is not MISSING and key not in seen:
                yield key

    def __len__(self) -> int:
        """How many keys are held: reads the table's keys whole (never on a batch's path)."""
        return sum(1 for _ in self)

    def __bool__(self) -> bool:
        raise TypeError(f"the truth of table {self.name} would read it whole: ask for a key")

    def keys_below(self, bound: str) -> list[str]:
        """The keys held that sort before `bound`, as the pending changes leave them (an index read in order)."""
        stored = [] if self.fresh else self.tables.store.keys_below(self.name, bound)
        out = [key for key in stored if self.cache.get(key, None) is not MISSING]
        held = set(stored)
        out += [k for k, v in self.cache.items() if v is not MISSING and k < bound and k not in held]
        return sorted(out)

    def __repr__(self) -> str:
        return f"StoredMap({self.name!r}, {len(self.cache)} cached, {len(self.pending)} pending)"


_UNCACHED: Any = object()


def _frozen(value: Any) -> Any:
    """A copy of a value that later changes in place cannot reach (sets and counts; the rest is immutable)."""
    if isinstance(value, set):
        return frozenset(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def _same(value: Any, original: Any) -> bool:
    """Whether a pending value is the one the store holds (`original` _UNCACHED: not known, so no)."""
    if original is _UNCACHED:
        return False
    if value is MISSING or original is MISSING:
        return value is original
    return bool(value == original)


class StoredSet(MutableSet[str]):
    """A set of texts over a table (a key per member)."""

    def __init__(self, table: MutableMapping[str, bool]) -> None:
        self.table = table

    @classmethod
    def _from_iterable(cls, it: Iterable[str]) -> set[str]:  # type: ignore[override]
        return set(it)

    def __contains__(self, item: object) -> bool:
        return item in self.table

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def __bool__(self) -> bool:
        raise TypeError("the truth of a stored set would read it whole: ask for a member")

    def add(self, value: str) -> None:
        if value not in self.table:
            self.table[value] = True

    def discard(self, value: str) -> None:
        self.table.pop(value, None)


def stored_set(tables: Tables, name: str) -> StoredSet:
    return StoredSet(tables.map(name, PRESENT))


def prefetch(table: object, keys: Iterable[str]) -> None:
    """Read these keys of a table on disk (a StoredMap or StoredSet) in one query; a map or set in memory:
    nothing to do."""
    if isinstance(table, StoredSet):
        table = table.table
    if isinstance(table, StoredMap):
        table.prefetch(keys)


def keys_below(table: Mapping[str, Any], bound: str) -> list[str]:
    """The keys of a map that sort before `bound`: by an index on disk, by a scan in memory."""
    if isinstance(table, StoredMap):
        return table.keys_below(bound)
    return sorted(k for k in table if k < bound)
