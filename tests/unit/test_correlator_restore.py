"""The union stage restores from a snapshot in the worker's state file plus the tail (issue 16), on the
in-memory log with the real state file: restarted from a snapshot taken midway through a history it answers
and writes what a full restore answers and writes; a snapshot written before an erasure brings nobody back;
a snapshot the topics do not bear out, or cannot be read, is ignored and history replayed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from adapters.memory.state import InMemoryStageState
from domain.log import LogRecord, TopicPartition
from domain.state_store import Checkpoint, Snapshot, StageState
from schemas.codec import WireCodec
from streams.agents.correlate_signals import CorrelateSignals
from streams.stage_context import StageContext, build_handler
from streams.stages import group_id, stage_named
from tests.factories import make_report
from tests.unit.test_correlation_snapshot import answers, but_erased_lists, without_maps
from tests.unit.test_stage_handlers import PERSON, MemoryHub, on_memory_hub
from tiphub.worker import SettingsProvisions

CODEC = WireCodec()
OTHER = {**PERSON, "name": "Sokha Chan", "identifiers": [{"kind": "PASSPORT", "value": "K11223344", "issuer": "KH"}]}


class NoSnapshots(SettingsProvisions):
    def stage_state(self, stage: str, version: int) -> StageState:
        return InMemoryStageState()


def union(hub: MemoryHub) -> CorrelateSignals:
    return hub.runners["correlate"].handler.handler  # type: ignore[no-any-return]


def a_handler(hub: MemoryHub, snapshots: bool = True) -> CorrelateSignals:
    """A union stage handler over the hub's log, as a worker builds it (with the state file, or none)."""
    provisions = SettingsProvisions(hub.settings) if snapshots else NoSnapshots(hub.settings)
    context = StageContext(hub.topics, hub.log, group_id(hub.settings, "correlate"), provisions)
    handler = build_handler(stage_named("correlate"), context)
    assert isinstance(handler, CorrelateSignals)
    return handler


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
    """A snapshot taken midway, the union stopped later and restarted from it: it answers, and writes for the
    next batch, what a union restored from the whole history answers and writes. `keep_map`: as written;
    else the books' entity maps are emptied (every entity here is one the tail changes: its keys map them)."""
    hub.start()
    submit(hub, 8)
    await hub.run()
    union(hub)._write_snapshot()  # midway: what a snapshot due now would hold
    store = union(hub).store
    midway = store.snapshot() if store is not None else None
    assert store is not None and midway is not None
    if not keep_map:
        midway = Snapshot(json.dumps(without_maps(json.loads(midway.data))), midway.positions)
    submit(hub, 8, start=8)
    await hub.run()
    await hub.runners.pop("correlate").close()  # the union stops; the other stages go on
    store.put_snapshot(midway)  # as if killed: the last snapshot is the one taken midway
    submit(hub, 6, start=16)
    await hub.run()

    restored, full = a_handler(hub), a_handler(hub, snapshots=False)
    for handler in (restored, full):
        await handler.on_assigned(set())
    assert restored.restores[-1].snapshot == midway.positions and full.restores[-1].snapshot is None
    assert 0 < restored.restores[-1].replayed < full.restores[-1].replayed, "only the tail after the snapshot"
    assert restored.restores[-1].versions < full.restores[-1].versions
    assert answers(restored.state) == answers(full.state)
    if keep_map:  # a book that kept its map is evaluated at the next flush only where the tail changed it
        assert not any(scope.full for scope in restored.state.scopes.values() if scope.correlator is not None)

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
async def test_restarted_from_a_snapshot_midway_the_union_answers_and_writes_as_a_full_restore(hub: MemoryHub) -> None:
    await restarted_midway(hub, keep_map=True)


@on_memory_hub
async def test_a_snapshot_whose_books_lost_their_entity_maps_is_mapped_from_the_tail_and_writes_as_a_full_restore(
    hub: MemoryHub,
) -> None:
    await restarted_midway(hub, keep_map=False)


@on_memory_hub
async def test_a_clean_stop_leaves_a_current_snapshot_and_the_restart_replays_nothing(hub: MemoryHub) -> None:
    hub.start()
    submit(hub, 6)
    await hub.run()
    await hub.restart("correlate")  # stopped between batches: the snapshot is written as it closes
    await hub.runners["correlate"].assign()
    [restored] = union(hub).restores
    assert restored.snapshot is not None and (restored.replayed, restored.versions) == (0, 0)
    submit(hub, 4, start=6)  # and it goes on from there, every signal version once
    await hub.run()
    versions: dict[tuple[str, str], list[int]] = {}
    for signal in hub.values(hub.topics.signals):
        versions.setdefault((signal["scope"], signal["signal_id"]), []).append(signal["version"])
    assert versions and all(v == list(range(1, len(v) + 1)) for v in versions.values()), versions


@on_memory_hub
async def test_a_stop_in_the_middle_of_a_batch_writes_no_snapshot_of_it(hub: MemoryHub) -> None:
    hub.start()
    submit(hub, 4)
    await hub.run()
    await hub.runners.pop("correlate").close()
    submit(hub, 4, start=4)
    await hub.run()
    handler = a_handler(hub)
    await handler.on_assigned(set())
    assert handler.store is not None
    held = handler.store.snapshot()
    await handler.handle(await unread(hub))  # its transaction never ends: the worker stops here
    await handler.close()
    assert handler.store.snapshot() == held, "the state held a batch Kafka never committed"


@on_memory_hub
async def test_a_snapshot_written_before_an_erasure_brings_the_erased_person_back_nowhere(hub: MemoryHub) -> None:
    hub.start()
    ids = submit(hub, 6)
    await hub.run()
    union(hub)._write_snapshot()
    subject = hub.accepted()[ids[1]]["subjects"][0]["subject_key_id"]  # PERSON, in reports 1, 3, 5
    store = union(hub).store
    before = store.snapshot() if store is not None else None
    assert store is not None and before is not None and subject in before.data
    await hub.runners.pop("correlate").close()
    hub.erase(subject, ids[1])  # while the union is down: its snapshot still holds the person

    hub.start("correlate")
    await hub.run()
    state = union(hub).state
    assert union(hub).restores[-1].snapshot is not None, "restored from the snapshot"
    assert subject in state.erased
    for scope in state.scopes.values():
        if scope.correlator is not None:
            assert all(o.subject_key_id != subject for o in scope.correlator.occurrences.values()), scope.name
            assert not any(m.startswith(ids[1]) for ms in scope.correlator.entity_members.values() for m in ms)
    after = store.snapshot()
    assert after is not None and after != before, "the snapshot holding the person was replaced at once"
    assert subject not in json.dumps(but_erased_lists(json.loads(after.data)))


async def restart_with(hub: MemoryHub, change: Any) -> CorrelateSignals:
    store = union(hub).store
    held = store.snapshot() if store is not None else None
    assert store is not None and held is not None
    await hub.runners.pop("correlate").close()
    store.put_snapshot(change(held))
    hub.start("correlate")
    await hub.runners["correlate"].assign()
    return union(hub)


def moved(held: Snapshot, ahead: int = 0, digest: str | None = None) -> Snapshot:
    """The snapshot with the position of a partition of tip.reports.accepted it read records of changed."""
    tp = next(t for t in held.positions if t.topic.endswith("reports.accepted") and held.positions[t].position)
    was = held.positions[tp]
    now = Checkpoint(was.position + ahead, was.last_offset, was.last_digest if digest is None else digest)
    return Snapshot(held.data, {**held.positions, tp: now})


@on_memory_hub
async def test_a_snapshot_the_topics_do_not_bear_out_or_that_cannot_be_read_is_ignored(hub: MemoryHub) -> None:
    hub.start()
    submit(hub, 6)
    await hub.run()
    union(hub)._write_snapshot()
    expected = answers(union(hub).state)
    for change, why in (
        (lambda s: moved(s, ahead=10_000), "beyond the end"),
        (lambda s: moved(s, digest="0" * 32), "not the one it was taken after"),
        (lambda s: Snapshot("{", s.positions), "not JSON"),
        (lambda s: Snapshot(s.data.replace('"version":2', '"version":9', 1), s.positions), "format version 9"),
    ):
        handler = await restart_with(hub, change)
        [restored] = handler.restores
        assert why in restored.ignored and restored.snapshot is None, (why, restored)
        assert answers(handler.state) == expected, why  # rebuilt from the topics, the same
        assert handler.store is not None and handler.store.snapshot() is not None  # and a good one written


@on_memory_hub
async def test_a_batch_whose_transaction_never_reported_its_end_is_not_carried_on(hub: MemoryHub) -> None:
    """Neither committed nor aborted (a runtime that lost track): the next batch restores first, so no signal
    version that was never written stays in the books, or reaches a snapshot."""
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
    full = a_handler(hub, snapshots=False)
    await full.on_assigned(set())
    await full.handle(batch)
    full.committed()
    assert answers(handler.state) == answers(full.state)


@on_memory_hub
async def test_once_a_snapshot_blocks_too_long_none_is_written_while_running_and_an_erasure_drops_it(
    hub: MemoryHub,
) -> None:
    """A snapshot is written on the worker's event loop: past a few seconds the worker would miss its group
    heartbeats (and be thrown out). Then the stage writes none while it runs, and an erasure drops the one held
    (it may hold the person) instead of writing another; a clean stop still writes one."""
    hub.start()
    ids = submit(hub, 6)
    await hub.run()
    handler = union(hub)
    handler._write_snapshot()
    store = handler.store
    assert store is not None and store.snapshot() is not None
    handler._snapshot_cost = 60.0  # as a history of ~10^5 reports would make it
    held = store.snapshot()
    submit(hub, 4, start=6)
    await hub.run()
    assert store.snapshot() == held, "no snapshot written while one blocks the worker too long"
    subject = hub.accepted()[ids[1]]["subjects"][0]["subject_key_id"]
    hub.erase(subject, ids[1])
    submit(hub, 1, start=10)
    await hub.run()
    assert store.snapshot() is None, "the snapshot that may hold the erased person was dropped"
    await hub.runners.pop("correlate").close()
    assert store.snapshot() is not None, "a clean stop writes one all the same"
