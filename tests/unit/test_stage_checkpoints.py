"""The accept and link stages restore from their checkpoint plus the tail of the topic, on the in-memory log
with the worker's real state file (SQLite under the hub's home): a restart reads only what its checkpoint
does not hold, a crash between Kafka's commit and the store's leaves a tail that the restart reads, and a
checkpoint the topics do not bear out is wiped and rebuilt, never trusted."""

from __future__ import annotations

from typing import Any

from adapters.memory.log import MemoryLog
from domain.log import TopicPartition
from domain.state_store import Checkpoint
from streams.checkpointed import Replayed
from tests.factories import make_report
from tests.unit.test_stage_handlers import PERSON, MemoryHub, on_memory_hub


def handler(hub: MemoryHub, stage: str) -> Any:
    return hub.runners[stage].handler.handler  # inside the Declared wrapper


def restores(hub: MemoryHub, stage: str) -> list[Replayed]:
    return list(handler(hub, stage).restores)


def killed_before_the_store_commit(hub: MemoryHub, stage: str) -> None:
    """The next batches commit on the log, and the worker dies before their state reaches the store (a
    SIGKILL between the two): nothing of them is stored."""
    handler(hub, stage).committed = lambda: None


async def restart(hub: MemoryHub, stage: str) -> None:
    """The stage's worker restarts and takes its partitions (restoring their state)."""
    await hub.restart(stage)
    await hub.runners[stage].assign()
    assert restores(hub, stage), "the restart restored its partitions"


def replayed(hub: MemoryHub, stage: str) -> int:
    return sum(r.replayed for r in restores(hub, stage))


@on_memory_hub
async def test_a_restarted_accept_stage_reads_only_the_tail_its_checkpoint_lacks(hub: MemoryHub) -> None:
    hub.start("verify", "accept")
    first = [hub.submit(make_report()) for _ in range(12)]
    await hub.run()
    assert replayed(hub, "accept") == 0  # an empty topic

    await restart(hub, "accept")
    assert replayed(hub, "accept") == 0, "every accepted id was in the store: nothing to read again"
    assert all(r.origin is not None and not r.wiped for r in restores(hub, "accept"))

    killed_before_the_store_commit(hub, "accept")
    tail = [hub.submit(make_report()) for _ in range(5)]
    await hub.run()
    await restart(hub, "accept")
    assert replayed(hub, "accept") == 5, "exactly the five reports the crash left out of the store"

    hub.submit(make_report(report_id=tail[0]))  # the same ids again: refused, from the store and the tail
    hub.submit(make_report(report_id=first[0]))
    await hub.run()
    assert sorted(hub.accepted()) == sorted(first + tail) and len(hub.log.records(hub.topics.accepted)) == 17
    assert [reason for reason, *_ in hub.rejections()] == ["duplicate_report_id"] * 2


@on_memory_hub
async def test_an_accept_checkpoint_beyond_the_topic_or_of_another_topic_is_wiped_and_rebuilt(
    hub: MemoryHub,
) -> None:
    hub.start("verify", "accept")
    ids = [hub.submit(make_report()) for _ in range(9)]
    await hub.run()
    state = handler(hub, "accept").state
    tp = TopicPartition(hub.topics.accepted, 0)
    state.commit(tp, [], Checkpoint(10_000, 9_999, "0" * 32))  # ahead of the topic: not its history

    await restart(hub, "accept")
    [wiped] = [r for r in restores(hub, "accept") if r.wiped]
    assert "beyond the end" in wiped.wiped and wiped.origin is None
    hub.submit(make_report(report_id=ids[0]))
    await hub.run()
    assert [reason for reason, *_ in hub.rejections()] == ["duplicate_report_id"]

    # The topics deleted and created again under the same names (a reset without a new prefix), and as
    # many reports again: the stored checkpoints are within the new topic's ends, but their records are not.
    hub.log = MemoryLog(hub.topics.specs(), clock_ms=hub._clock)
    hub.runners.clear()
    hub.start("verify", "accept")
    again = [hub.submit(make_report()) for _ in range(30)]
    await hub.run()
    hub.submit(make_report(report_id=ids[1]))  # accepted on the old topics only: new here
    await hub.run()
    await restart(hub, "accept")
    assert all(r.origin is not None for r in restores(hub, "accept"))  # the new state is trusted at a restart
    assert sorted(hub.accepted()) == sorted([*again, ids[1]]) and hub.rejections() == []


async def _linked_hub(hub: MemoryHub) -> None:
    hub.start("verify", "accept", "link")
    hub.submit(make_report(source_agency="NZ-CUSTOMS", subjects=[PERSON]))
    hub.submit(make_report(source_agency="NZ-LABOUR", indicator_type="LABOUR_INSPECTION", subjects=[PERSON]))
    await hub.run()


def _links(hub: MemoryHub) -> list[tuple[str, str, str]]:
    return [(link["a"], link["b"], link["basis"]) for batch in hub.values(hub.topics.links) for link in batch["links"]]


@on_memory_hub
async def test_a_restarted_link_stage_reads_only_the_tail_and_still_links_a_newcomer(hub: MemoryHub) -> None:
    await _linked_hub(hub)
    links = _links(hub)
    assert links
    await restart(hub, "link")
    assert replayed(hub, "link") == 0 and all(r.origin is not None for r in restores(hub, "link"))

    killed_before_the_store_commit(hub, "link")
    hub.submit(make_report(source_agency="NZ-POLICE", subjects=[PERSON]))
    await hub.run()
    after_crash = _links(hub)
    await restart(hub, "link")
    assert replayed(hub, "link") >= 1, "the batch the store missed is read back, not processed again"

    hub.submit(make_report(source_agency="NZ-IMMIGRATION", indicator_type="VISA_APPLICATION_FLAG", subjects=[PERSON]))
    await hub.run()
    new = _links(hub)[len(after_crash) :]
    people = {occ.split(":")[0] for a, b, _ in new for occ in (a, b)}
    assert len(people) >= 3, "the newcomer is linked to every earlier report, the one of the crash included"
    assert len(set(_links(hub))) == len(_links(hub)), "no link written twice"


@on_memory_hub
async def test_a_link_index_ahead_of_the_groups_commit_is_wiped_and_its_links_made_again(hub: MemoryHub) -> None:
    """An operator resets the link group to the beginning: an index kept at its old checkpoint would take
    every sighting for a re-delivery and link nothing. It is wiped, and the links are made again."""
    await _linked_hub(hub)
    links = _links(hub)
    group = hub.runners["link"].group_id
    await hub.runners.pop("link").close()
    hub.log.groups[group] = {}
    hub.start("link")
    await hub.run()
    assert any("beyond the end" in r.wiped for r in restores(hub, "link"))
    assert sorted(_links(hub)[len(links) :]) == sorted(links)


@on_memory_hub
async def test_an_erased_person_leaves_the_stored_link_index(hub: MemoryHub) -> None:
    await _linked_hub(hub)
    later = hub.submit(make_report(source_agency="NZ-POLICE", subjects=[PERSON]))
    await hub.run()
    state = handler(hub, "link").state
    erased = hub.accepted()[later]["subjects"][0]["subject_key_id"]

    def filed() -> list[str]:
        return [row[0] for row in state.db.query("SELECT value FROM state_entries WHERE stage = 'link'")]

    assert any(erased in value for value in filed())
    hub.erase(erased, later)
    hub.submit(make_report(source_agency="NZ-IMMIGRATION", subjects=[{**PERSON, "name": "Sokha Chan"}]))
    await hub.run()
    assert filed() and not any(erased in value for value in filed()), "the erased person's sightings are gone"
