"""The union stage restores from its tables in the worker's state file plus the tail (issue 16), on the
in-memory log with the real state file: restarted from tables last written midway through a history it
answers and writes what a full restore answers and writes; after an erasure while it was down no row holds
the person; tables the topics do not bear out, or of another configuration, are ignored and history replayed;
a batch whose transaction never ended is written nowhere."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from adapters.sql.tables import SqlTables
from domain.log import LogRecord, TopicPartition
from domain.state_store import Checkpoint
from domain.working_set import TableStore
from schemas.codec import WireCodec
from streams.agents.correlate_signals import CorrelateSignals
from streams.stage_context import StageContext, build_handler
from streams.stages import group_id, stage_named
from tests.factories import make_report
from tests.unit.test_correlation_tables import answers
from tests.unit.test_stage_handlers import PERSON, MemoryHub, on_memory_hub
from tiphub.worker import SettingsProvisions

CODEC = WireCodec()
OTHER = {**PERSON, "name": "Sokha Chan", "identifiers": [{"kind": "PASSPORT", "value": "K11223344", "issuer": "KH"}]}


class InMemoryOnly(SettingsProvisions):
    def stage_tables(self, stage: str) -> TableStore:
        return None  # type: ignore[return-value]  # the state in memory: every restore replays history


def union(hub: MemoryHub) -> CorrelateSignals:
    return hub.runners["correlate"].handler.handler  # type: ignore[no-any-return]


def a_handler(hub: MemoryHub, tables: bool = True) -> CorrelateSignals:
    """A union stage handler over the hub's log, as a worker builds it (with the state file, or none)."""
    provisions = SettingsProvisions(hub.settings) if tables else InMemoryOnly(hub.settings)
    context = StageContext(hub.topics, hub.log, group_id(hub.settings, "correlate"), provisions)
    handler = build_handler(stage_named("correlate"), context)
    assert isinstance(handler, CorrelateSignals)
    return handler


def store_of(handler: CorrelateSignals) -> SqlTables:
    assert isinstance(handler.tables, SqlTables)
    return handler.tables


def rows(store: SqlTables) -> dict[tuple[str, str], str]:
    """Every row of the union's tables in the state file."""
    found = store.db.query("SELECT tbl, key, value FROM state_tables WHERE stage = ?", (store.stage,))
    return {(table, key): value for table, key, value in found}


def submit(hub: MemoryHub, count: int, start: int = 0) -> list[str]:
    agencies = ["NZ-CUSTOMS", "NZ-LABOUR", "NGO-SHAKTI", "NZ-POLICE"]
    elements = [["ACT_TRANSPORT", "MEANS_DECEPTION"], ["PURPOSE_FORCED_LABOUR"], ["ACT_RECRUITMENT"]]
    return [
        hub.submit(
            make_report(
                source_agency=agencies[n % 4],
                elements=elements[n % 3],
                subjects=[PERSON if n % 2 else OTHER],
                organisations=[],
            )
        )
        for n in range(start, start + count)
    ]


async def unread(hub: MemoryHub) -> list[LogRecord]:
    """The union's inputs beyond its group's commits: the batch a restarted union reads next."""
    every = range(hub.topics.partitions)
    tps = [TopicPartition(t, p) for t in (hub.topics.accepted, hub.topics.decisions) for p in every]
    tps.append(TopicPartition(hub.topics.links, 0))
    start = await hub.log.committed(group_id(hub.settings, "correlate"), tps)
    async with hub.log.reading() as reader:
        return await reader.read(await reader.settled_ends(tps), start)


def written(outputs: Sequence[Any], topic: str) -> list[tuple[bytes | None, dict[str, Any]]]:
    return [(o.key, CODEC.decode(o.value)[1]) for o in outputs if o.topic == topic]


async def restarted_midway(hub: MemoryHub, keep_map: bool) -> None:
    """The tables last written midway (the union went on committing to Kafka, but wrote its tables no more: as
    if killed after each commit), then restarted from them: it answers, and writes for the next batch, what a
    union restored from the whole history answers and writes. `keep_map`: as written; else written as while its
    books owed a flush (the entity maps empty, the scopes marked unmapped): they are mapped whole."""
    hub.start()
    submit(hub, 8)
    await hub.run()
    store = store_of(union(hub))
    midway = store.positions()
    union(hub).tables = None  # from here on it writes no tables
    if not keep_map:
        held = rows(store)
        changes: list[tuple[str, str, str | None]] = [
            (table, key, None) for table, key in held if table.endswith(("/book/by_entity", "/book/entity_of_signal"))
        ]
        changes += [
            ("scopes", key, json.dumps([json.loads(v)[0], True])) for (t, key), v in held.items() if t == "scopes"
        ]
        store.write(changes, midway)
    submit(hub, 8, start=8)
    await hub.run()
    await hub.runners.pop("correlate").close()  # the union stops; the other stages go on
    submit(hub, 6, start=16)
    await hub.run()

    restored, full = a_handler(hub), a_handler(hub, tables=False)
    for handler in (restored, full):
        await handler.on_assigned(set())
    assert restored.restores[-1].stored == midway and full.restores[-1].stored is None
    assert 0 < restored.restores[-1].replayed < full.restores[-1].replayed, "only the tail after the tables"
    assert restored.restores[-1].versions < full.restores[-1].versions
    assert answers(restored.state) == answers(full.state)
    scopes = [scope for scope in restored.state.scopes.values() if scope.correlator is not None]
    if keep_map:  # a book that kept its map is evaluated at the next flush only where the tail changed it
        assert not any(scope.full for scope in scopes)
    else:
        assert all(scope.full for scope in scopes)

    batch = await unread(hub)
    assert batch
    outputs = [await restored.handle(batch), await full.handle(batch)]
    for topic in (hub.topics.signals, hub.topics.coverage):
        assert written(outputs[0], topic) == written(outputs[1], topic), topic
    assert written(outputs[0], hub.topics.signals), "the batch changed signals"
    assert answers(restored.state) == answers(full.state)
    for handler in (restored, full):
        await handler.close()


@on_memory_hub
async def test_restarted_from_tables_written_midway_the_union_answers_and_writes_as_a_full_restore(
    hub: MemoryHub,
) -> None:
    await restarted_midway(hub, keep_map=True)


@on_memory_hub
async def test_tables_written_while_the_books_owed_a_flush_are_mapped_whole_and_write_as_a_full_restore(
    hub: MemoryHub,
) -> None:
    await restarted_midway(hub, keep_map=False)


@on_memory_hub
async def test_after_every_commit_the_tables_hold_it_and_a_restart_replays_nothing(hub: MemoryHub) -> None:
    hub.start()
    submit(hub, 6)
    await hub.run()
    assert union(hub).saves > 0
    await hub.restart("correlate")  # stopped between batches
    await hub.runners["correlate"].assign()
    [restored] = union(hub).restores
    assert restored.stored is not None and (restored.replayed, restored.versions) == (0, 0)
    tables = union(hub).state.tables
    assert tables is not None and tables.loads <= 1 + len(union(hub).state.scopes), "it read its scopes' rows only"
    submit(hub, 4, start=6)  # and it goes on from there, every signal version once
    await hub.run()
    versions: dict[tuple[str, str], list[int]] = {}
    for signal in hub.values(hub.topics.signals):
        versions.setdefault((signal["scope"], signal["signal_id"]), []).append(signal["version"])
    assert versions and all(v == list(range(1, len(v) + 1)) for v in versions.values()), versions


@on_memory_hub
async def test_a_stop_in_the_middle_of_a_batch_writes_nothing_of_it(hub: MemoryHub) -> None:
    hub.start()
    submit(hub, 4)
    await hub.run()
    await hub.runners.pop("correlate").close()
    submit(hub, 4, start=4)
    await hub.run()
    handler = a_handler(hub)
    await handler.on_assigned(set())
    held = rows(store_of(handler)), store_of(handler).positions()
    await handler.handle(await unread(hub))  # its transaction never ends: the worker stops here
    await handler.close()
    assert (rows(store_of(handler)), store_of(handler).positions()) == held, "a batch Kafka never committed"


@on_memory_hub
async def test_after_an_erasure_while_the_union_was_down_no_row_holds_the_person(hub: MemoryHub) -> None:
    hub.start()
    ids = submit(hub, 6)
    await hub.run()
    subject = hub.accepted()[ids[1]]["subjects"][0]["subject_key_id"]  # PERSON, in reports 1, 3, 5
    store = store_of(union(hub))

    def naming() -> list[tuple[str, str]]:
        return [(t, k) for (t, k), v in rows(store).items() if not t.endswith("erased") and subject in k + v]

    assert naming()
    await hub.runners.pop("correlate").close()
    hub.erase(subject, ids[1])  # while the union is down: its tables still hold the person

    hub.start("correlate")
    await hub.run()
    state = union(hub).state
    assert union(hub).restores[-1].stored is not None, "restored from the tables"
    assert subject in state.erased
    for scope in state.scopes.values():
        if scope.correlator is not None:
            assert all(o.subject_key_id != subject for o in scope.correlator.occurrences.values()), scope.name
            assert not any(m.startswith(ids[1]) for ms in scope.correlator.entity_members.values() for m in ms)
    assert naming() == [], "only named as erased"


async def restart_with(hub: MemoryHub, change: Any) -> CorrelateSignals:
    store = store_of(union(hub))
    await hub.runners.pop("correlate").close()
    change(store)
    hub.start("correlate")
    await hub.runners["correlate"].assign()
    return union(hub)


def moved(store: SqlTables, ahead: int = 0, digest: str | None = None) -> None:
    """The tables' position on a partition of tip.reports.accepted they read records of, changed."""
    held = store.positions()
    tp = next(t for t in held if t.topic.endswith("reports.accepted") and held[t].position)
    was = held[tp]
    now = Checkpoint(was.position + ahead, was.last_offset, was.last_digest if digest is None else digest)
    store.write([], {**held, tp: now})


@on_memory_hub
async def test_tables_the_topics_do_not_bear_out_or_of_another_configuration_are_ignored(hub: MemoryHub) -> None:
    hub.start()
    submit(hub, 6)
    await hub.run()
    expected = answers(union(hub).state)
    for change, why in (
        (lambda s: moved(s, ahead=10_000), "beyond the end"),
        (lambda s: moved(s, digest="0" * 32), "not the one they were taken after"),
        (lambda s: s.write([("meta", "fingerprint", json.dumps("0" * 32))], s.positions()), "another Collection Plan"),
    ):
        handler = await restart_with(hub, change)
        [restored] = handler.restores
        assert why in restored.ignored and restored.stored is None, (why, restored)
        assert answers(handler.state) == expected, why  # rebuilt from the topics, the same
        assert store_of(handler).positions(), "and written again"


@on_memory_hub
async def test_a_batch_whose_transaction_never_reported_its_end_is_not_carried_on(hub: MemoryHub) -> None:
    """Neither committed nor aborted (a runtime that lost track): the next batch restores first, so no signal
    version that was never written stays in the books, or reaches the tables."""
    hub.start()
    submit(hub, 4)
    await hub.run()
    await hub.runners.pop("correlate").close()
    submit(hub, 4, start=4)
    await hub.run()
    handler = a_handler(hub)
    await handler.on_assigned(set())
    batch = await unread(hub)
    await handler.handle(batch)  # its end is never reported
    await handler.handle(batch)
    assert len(handler.restores) == 2
    handler.committed()
    await handler._saved()
    full = a_handler(hub, tables=False)
    await full.on_assigned(set())
    await full.handle(batch)
    full.committed()
    assert answers(handler.state) == answers(full.state)


@on_memory_hub
async def test_a_rebuild_from_the_beginning_after_an_erasure_writes_the_person_nowhere(hub: MemoryHub) -> None:
    """A new worker, a wiped file, tables of another configuration: the union replays every report, the erased
    person's among them, after applying the erasure; no row it writes names that person (found by a review:
    the shared facts kept them)."""
    hub.start()
    ids = submit(hub, 6)
    await hub.run()
    subject = hub.accepted()[ids[1]]["subjects"][0]["subject_key_id"]
    hub.erase(subject, ids[1])
    await hub.run()
    store = store_of(union(hub))

    def naming() -> list[tuple[str, str]]:
        return [(t, k) for (t, k), v in rows(store).items() if not t.endswith("erased") and subject in k + v]

    assert naming() == []
    await hub.runners.pop("correlate").close()
    store.clear()
    handler = a_handler(hub)
    await handler.on_assigned(set())
    assert handler.restores[-1].stored is None and handler.restores[-1].replayed
    await handler.close()
    assert naming() == []
    gone = {(t, k) for (t, k), v in rows(store).items() if t.endswith("links") and ids[1] + "#" in k + v}
    assert gone == set(), "no link to the erased person's occurrence is kept"
