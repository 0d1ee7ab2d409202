"""The audit anchors' in-memory twin."""

from __future__ import annotations

from domain.audit_chain import Anchor


class InMemoryAnchors:
    def __init__(self) -> None:
        self.anchors: dict[tuple[str, int], Anchor] = {}

    def advance(self, anchor: Anchor) -> None:
        """Forward only, as the SQL store: a late writer cannot un-anchor newer entries."""
        held = self.anchors.get((anchor.topic, anchor.partition))
        if held is None or anchor.seq > held.seq:
            self.anchors[(anchor.topic, anchor.partition)] = anchor

    def all(self, topic: str) -> dict[int, Anchor]:
        return {partition: a for (t, partition), a in self.anchors.items() if t == topic}
