"""The union stage's table store (domain/working_set.py `TableStore`): one contract for the state file's tables
(adapters/sql/tables.py, a real SQLite file) and the in-memory twin; and a `StoredMap` is a dict whose
changes become durable only when saved."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.memory.tables import InMemoryTables
from adapters.sql.state import SqlStageState, open_state_database
from adapters.sql.tables import SqlTables
from domain.log import TopicPartition
from domain.state_store import Checkpoint
from domain.working_set import TEXT_SET, StateError, TableStore, WorkingSet

TP = TopicPartition("tip.links", 0)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TableStore]:
    if request.param == "memory":
        yield InMemoryTables()
        return
    db = open_state_database(tmp_path / "state.sqlite3")
    yield SqlTables(db, "correlate")
    db.close()


def test_a_write_is_read_back_with_its_positions_and_deletes_what_it_names(store: TableStore) -> None:
    assert store.load("hub/entities", ["a"]) == {} and store.keys("hub/entities") == [] and store.positions() == {}
    store.write([("hub/entities", "a", '["a","b"]'), ("hub/entities", "c", '["c"]')], {TP: Checkpoint(5, 4, "d")})
    store.write([("hub/entities", "c", None), ("hub/parent", "b", '"a"')], {TP: Checkpoint(9, 8, "e")})
    assert store.load("hub/entities", ["a", "c", "x"]) == {"a": '["a","b"]'}
    assert sorted(store.keys("hub/entities")) == ["a"] and store.keys("hub/parent") == ["b"]
    assert store.load("other/entities", ["a"]) == {}  # tables are apart
    assert store.positions() == {TP: Checkpoint(9, 8, "e")}
    many = [f"k{i}" for i in range(1_200)]  # more keys than one query takes
    store.write([("t", k, '"v"') for k in many], {})
    assert len(store.load("t", many)) == 1_200 and store.positions() == {}
    store.clear()
    assert store.keys("hub/entities") == [] and store.positions() == {}


def test_the_tables_outlive_the_process_and_a_new_stage_format_wipes_them(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = open_state_database(path)
    SqlStageState(db, "correlate", 2)
    SqlTables(db, "correlate").write([("hub/entities", "a", '["a"]')], {TP: Checkpoint(1, 0, "d")})
    db.close()
    again = open_state_database(path)
    SqlStageState(again, "correlate", 2)
    assert SqlTables(again, "correlate").load("hub/entities", ["a"]) == {"a": '["a"]'}
    SqlStageState(again, "correlate", 3)  # a release that files its state otherwise
    assert SqlTables(again, "correlate").keys("hub/entities") == [] and SqlTables(again, "correlate").positions() == {}


def test_a_value_that_is_not_what_its_table_holds_is_refused_by_name(store: TableStore) -> None:
    store.write([("hub/entities", "a", '{"no": "list"}')], {})
    tables = WorkingSet(store)
    entities = tables.map("hub/entities", TEXT_SET, mutable=True)
    with pytest.raises(StateError, match="expected a list of texts"):
        entities["a"]


@pytest.mark.parametrize("seed", range(4))
def test_a_stored_map_is_a_dict_whose_changes_last_only_once_saved(store: TableStore, seed: int) -> None:
    """Random reads, writes, in-place changes and deletes; saved or dropped at random; a tiny cache."""
    rng = random.Random(seed)
    tables = WorkingSet(store, cache_entries=3)
    stored = tables.map("m", TEXT_SET, set, mutable=True)
    saved: dict[str, set[str]] = {}
    model: dict[str, set[str]] = {}
    keys = [f"k{i}" for i in range(12)]
    for step in range(400):
        key, member = rng.choice(keys), rng.choice("abcd")
        action = rng.randrange(6)
        if action == 0:
            stored[key].add(member)  # the default, stored from then on
            model.setdefault(key, set()).add(member)
        elif action == 1:
            assert stored.get(key) == model.get(key)
            if key in model:
                stored.get(key).discard(member)  # in place, through a read
                model[key].discard(member)
        elif action == 2:
            assert stored.pop(key, None) == model.pop(key, None)
        elif action == 3:
            stored[key] = {member}
            model[key] = {member}
        elif action == 4:
            assert (key in stored) == (key in model)
        elif rng.random() < 0.7:
            store.write(tables.changes(), {})
            tables.saved()
            saved = {k: set(v) for k, v in model.items()}
        else:
            tables.drop()
            model = {k: set(v) for k, v in saved.items()}
        assert dict(stored) == model, step
    assert tables.loads > 0  # the cache was too small to hold them: they were read back


def test_a_fresh_prefix_reads_nothing_until_saved_and_then_reads_what_it_wrote(store: TableStore) -> None:
    """A scope made in this batch (WorkingSet.within(fresh=True)): its misses cost no read; once its changes
    are saved, a map that let them go reads them back; a dropped batch leaves it empty."""
    store.write([("old/m", "k", '["x"]')], {})
    tables = WorkingSet(store, cache_entries=0)
    new = tables.within("new/", fresh=True).map("m", TEXT_SET, set, mutable=True)
    old = tables.within("old/").map("m", TEXT_SET, set, mutable=True)
    assert "k" not in new and new.keys_below("z") == [] and tables.loads == 0
    new["k"].add("a")
    assert old["k"] == {"x"} and tables.loads == 1  # another prefix is read as ever
    tables.drop()  # after a drop nothing is taken as fresh: the store is read again
    assert "k" not in new and tables.loads == 2
    new["k"].add("b")
    store.write(tables.changes(), {TP: Checkpoint(1)})
    tables.saved()  # the cache keeps nothing: the next read goes to the store
    assert new["k"] == {"b"} and tables.loads == 3
    assert WorkingSet(store).map("new/m", TEXT_SET)["k"] == {"b"}


def test_misses_in_a_fresh_prefix_stay_within_the_caches_bound(store: TableStore) -> None:
    tables = WorkingSet(store, cache_entries=10)
    new = tables.within("new/", fresh=True).map("m", TEXT_SET)
    assert all(f"k{i}" not in new for i in range(5_000))
    new["x"] = {"a"}
    store.write(tables.changes(), {TP: Checkpoint(1)})
    tables.saved()
    assert tables.cached() <= 10
