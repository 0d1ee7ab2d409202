"""Retention: past its period (policies/retention.yaml) the hub crypto-shreds what reads a report.

The records stay on the topics for the audit trail, unreadable. The sweep is idempotent: a key erased
before, by a sweep or an erasure request, is not erased again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from domain.log import TopicIO
from domain.ports import KeyVault
from domain.withdrawals import Withdrawals
from policies.loader import AGREEMENTS_DIR
from streams.erasure import ErasureResult, erase_keys
from streams.topics import Topics

RETENTION_FILE = AGREEMENTS_DIR.parent / "retention.yaml"


@dataclass(frozen=True)
class RetentionPolicy:
    """Days the hub keeps the means to read a report, counted from observed_at, by indicator type."""

    default_days: int
    by_indicator_type: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, text: str) -> RetentionPolicy:
        data = yaml.safe_load(text)
        by_type = data.get("indicator_types") or {}
        return cls(int(data["default_days"]), {str(kind): int(days) for kind, days in by_type.items()})

    @classmethod
    def load(cls, path: Path = RETENTION_FILE) -> RetentionPolicy:
        return cls.from_yaml(path.read_text())

    def days(self, indicator_type: str) -> int:
        return self.by_indicator_type.get(indicator_type, self.default_days)


def expired_key_ids(
    accepted: list[dict[str, Any]], policy: RetentionPolicy, now: datetime, already_erased: Collection[str]
) -> list[str]:
    """Every key (each subject's, then the report's) of every report past its retention, not erased yet. Pure."""
    found: list[str] = []
    for report in accepted:
        observed: datetime = report["observed_at"]
        if observed + timedelta(days=policy.days(str(report["indicator_type"]))) < now:
            keys = [s["subject_key_id"] for s in report["subjects"]] + [str(report["report_key_id"])]
            found += [k for k in keys if k not in already_erased]
    return found


async def sweep_retention(
    log: TopicIO,
    topics: Topics,
    vault: KeyVault,
    policy: RetentionPolicy,
    now: datetime,
) -> ErasureResult:
    """Crypto-shred, as of `now`, the keys of every accepted report past its retention: each gets its
    erasure fact and the sweep its audit event, as for an erasure request."""
    erasures = await log.read_decoded(topics.erasures, topics.partitions)
    erased = set(Withdrawals().fold_all(erasures, "erased").erased)
    accepted = await log.read_decoded(topics.accepted, topics.partitions)
    return await erase_keys(
        log,
        topics,
        vault,
        expired_key_ids(accepted, policy, now, erased),
        reason="retention period ended",
        requested_by="retention-sweep",
    )
