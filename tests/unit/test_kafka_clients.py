"""Client fixes (streams/kafka_clients.py): what aiokafka does once they are installed."""

from __future__ import annotations

from aiokafka.coordinator.protocol import ConsumerProtocol, ConsumerProtocolMemberAssignment

from streams.kafka_clients import harden


def test_an_empty_group_assignment_reads_as_no_partitions_and_real_ones_still_decode() -> None:
    harden()
    harden()  # idempotent
    assert ConsumerProtocol.ASSIGNMENT.decode(b"").partitions() == []
    real = ConsumerProtocolMemberAssignment(0, [ConsumerProtocolMemberAssignment.Assignment("t", [0, 2])], b"")
    assert [tp.partition for tp in ConsumerProtocol.ASSIGNMENT.decode(real.encode()).partitions()] == [0, 2]
