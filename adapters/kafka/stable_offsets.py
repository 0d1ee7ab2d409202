"""Where a consumer group committed, as it stands once every transaction that commits offsets for it ended.

A transaction's offsets become the group's committed offsets only when the transaction coordinator has
written its commit markers, after it answered the producer's commit. Until then an OffsetFetch answers
the offsets from before the transaction, and aiokafka 0.14 sends OffsetFetch v3, which cannot ask
otherwise. A worker that reads a batch again from that answer (after an abort, or as the partitions' new
owner) processes a batch that already committed, and writes its outputs twice: seen once in CI during a
rolling restart of a three-node cluster, where the markers wait for a partition's new leader. Kafka 2.5+
answers OffsetFetch v7 with `require_stable` by UNSTABLE_OFFSET_COMMIT while such a transaction is pending
(KIP-447), and this module asks that way and waits it out. A broker without v7 (noida-db) is asked v3.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    KafkaError,
    KafkaTimeoutError,
    NotCoordinatorForGroupError,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.commit import OffsetFetchRequest_v3
from aiokafka.protocol.types import Boolean, CompactArray, CompactString, Int16, Int32, Int64, Schema, TaggedFields

log = logging.getLogger(__name__)
UNSTABLE_OFFSET_COMMIT = 88  # a transaction with offsets for the partition is pending (KIP-447)
RETRY_S = 0.1
COORDINATOR_GONE = (NotCoordinatorForGroupError, GroupCoordinatorNotAvailableError)


class OffsetFetchResponse_v7(Response):  # type: ignore[misc]
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("metadata", CompactString("utf-8")),
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class StableOffsetFetch(Request[OffsetFetchRequest_v3 | OffsetFetchRequest_v7]):  # type: ignore[misc]
    """OffsetFetch with require_stable where the broker speaks v7; plain v3 where it does not."""

    API_KEY = 9

    def __init__(self, group_id: str, partitions: dict[str, list[int]]) -> None:
        self.group_id = group_id
        self.partitions = partitions

    def build(self, request_struct_class: Any) -> Any:
        if request_struct_class is OffsetFetchRequest_v7:
            topics: list[tuple[str, list[int], dict[int, bytes]]] = [
                (topic, parts, {}) for topic, parts in sorted(self.partitions.items())
            ]
            return OffsetFetchRequest_v7(self.group_id, topics, True, {})
        return OffsetFetchRequest_v3(self.group_id, sorted(self.partitions.items()))


class Unstable(KafkaError):  # type: ignore[misc]
    retriable = True


Ask = Callable[[StableOffsetFetch], Awaitable[Any]]  # send the request to the group's coordinator


async def stable_committed(
    consumer: Any, partitions: set[TopicPartition], *, within_s: float = 75.0
) -> dict[TopicPartition, int | None]:
    """The group's committed offset of each partition (None: never committed), asked through a member's
    coordinator, waiting while a transaction that commits offsets for any of them is pending."""
    coordinator = consumer._coordinator

    async def ask(request: StableOffsetFetch) -> Any:
        await coordinator.ensure_coordinator_known()
        return await coordinator._send_req(request)

    return await _stable(ask, coordinator.coordinator_dead, coordinator.group_id, partitions, within_s)


async def stable_group_offsets(
    admin: Any, group_id: str, partitions: set[TopicPartition], *, within_s: float = 75.0
) -> dict[TopicPartition, int | None]:
    """The same, asked by an admin client (a stage's restore: it must stop where the stage then resumes)."""

    async def ask(request: StableOffsetFetch) -> Any:
        return await admin._send_request(request, await admin.find_coordinator(group_id))

    return await _stable(ask, lambda: None, group_id, partitions, within_s)


async def _stable(
    ask: Ask, forget: Callable[[], None], group_id: str, partitions: set[TopicPartition], within_s: float
) -> dict[TopicPartition, int | None]:
    """A pending transaction of a dead producer ends when the coordinator aborts it (the producer's
    transaction timeout, 60 s by default), hence `within_s`, which bounds every request too; after it the
    last error is raised (a KafkaError): a broker away that long is the caller's to handle."""
    if not partitions:
        return {}
    wanted: dict[str, list[int]] = {}
    for tp in sorted(partitions):
        wanted.setdefault(tp.topic, []).append(tp.partition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    last: KafkaError | None = None
    for attempt in itertools.count():
        try:
            response = await asyncio.wait_for(ask(StableOffsetFetch(group_id, wanted)), deadline - loop.time())
            return _offsets(response, partitions)
        except (TimeoutError, KafkaError) as exc:
            if isinstance(exc, COORDINATOR_GONE):
                forget()
            if isinstance(exc, KafkaError) and not exc.retriable:
                raise
            last = exc if isinstance(exc, KafkaError) else last
            if loop.time() >= deadline:
                if last is exc:
                    raise
                if last is not None:  # the request timed out after the broker had answered why it could not say
                    raise last from exc
                raise KafkaTimeoutError(f"where group {group_id} committed: no answer in {within_s} s") from exc
            if not isinstance(exc, Unstable):
                log.warning("where the group committed is unknown (%s); asking again", type(exc).__name__)
        await asyncio.sleep(min(RETRY_S if attempt < 10 else RETRY_S * 2 ** (attempt - 9), 2.0))
    raise AssertionError("unreachable")


def _offsets(response: Any, partitions: set[TopicPartition]) -> dict[TopicPartition, int | None]:
    if getattr(response, "error_code", 0):
        raise for_code(response.error_code)()
    found: dict[TopicPartition, int | None] = {}
    for topic in response.topics:
        for partition in topic[1]:
            # v3: (partition, offset, metadata, error_code); v7 adds the leader epoch and tags
            index, offset = partition[0], partition[1]
            error_code = partition[4] if len(partition) > 4 else partition[3]
            tp = TopicPartition(topic[0], index)
            if error_code == UNSTABLE_OFFSET_COMMIT:
                raise Unstable(f"a transaction committing offsets of {tp} is pending")
            if error_code == UnknownTopicOrPartitionError.errno:
                # The partition is assigned, so its topic exists: metadata catching up. Not "never committed",
                # which would read the partition again from its beginning.
                raise Unstable(f"{tp} not known to the coordinator yet")
            if error_code:
                error = for_code(error_code)
                raise error(tp) if error is GroupAuthorizationFailedError else error()
            found[tp] = None if offset < 0 else offset
    return {tp: found.get(tp) for tp in partitions}
