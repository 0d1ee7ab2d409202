"""The audit anchor in SQL: the latest signed head of every audit partition, outside Kafka."""

from __future__ import annotations

import time

from adapters.sql.database import Database
from domain.audit_chain import Anchor


class AnchorStore:
    """The latest signed head of every audit partition, kept outside Kafka."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.execute(
            f"""CREATE TABLE IF NOT EXISTS audit_anchors (
                topic TEXT NOT NULL, partition_id INTEGER NOT NULL, seq BIGINT NOT NULL,
                head {db.blob()} NOT NULL, signature {db.blob()} NOT NULL, written_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (topic, partition_id))"""
        )

    def advance(self, anchor: Anchor) -> None:
        """Move the anchor forward; never back (a late writer cannot un-anchor newer entries)."""
        self.db.execute(
            "INSERT INTO audit_anchors (topic, partition_id, seq, head, signature, written_at) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (topic, partition_id) DO UPDATE SET seq = excluded.seq, head = excluded.head, "
            "signature = excluded.signature, written_at = excluded.written_at WHERE excluded.seq > audit_anchors.seq",
            (anchor.topic, anchor.partition, anchor.seq, anchor.head, anchor.signature, time.time()),
        )

    def all(self, topic: str) -> dict[int, Anchor]:
        rows = self.db.query("SELECT partition_id, seq, head, signature FROM audit_anchors WHERE topic = ?", (topic,))
        return {r[0]: Anchor(topic, r[0], r[1], bytes(r[2]), bytes(r[3])) for r in rows}
