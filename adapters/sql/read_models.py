"""The gateway's read models in SQL (domain/read_models.py): SQLite by default, PostgreSQL by URL.

Each tailed record is kept as the bytes the topic holds (decoded when it is read, through a bounded cache),
beside the columns its queries look it up by. A batch's rows and the positions after it are written in one
transaction: after a crash the store holds a batch whole or not at all, and the tail resumes from the
positions it holds. Every fold is idempotent (keys, or an offset guard where a later record replaces an
earlier one), so a record read twice, by a restart or by another gateway sharing a PostgreSQL store,
changes nothing.

Pages of a topic-ordered log (rejections, a partner's summaries, the audit trail) take at most `limit` rows
of each partition after the caller's position, by index, and merge them: time follows the page.
"""

from __future__ import annotations

import heapq
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from adapters.sql.database import Database
from domain.audit_chain import NO_MAC, forgery, unusable
from domain.facts import ReportHeader, header_of
from domain.log import Record
from domain.read_models import (
    READ_MODEL_FORMAT,
    AuditFilter,
    Decided,
    PageFacts,
    PartnerEvent,
    Position,
    record_digest,
)
from domain.release import Summary, SummaryBook
from domain.scoped import HUB_SCOPE
from domain.withdrawals import kind_of
from policies.visibility import field_rules
from schemas.codec import CodecError, WireCodec
from streams.audit_events import audit_detail
from streams.topics import Topics

log = logging.getLogger("tiphub.read_models")


def _database_errors() -> tuple[type[Exception], ...]:
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


# A store away or failing: the batch is read again. Except where a record's content caused it (a value the store
# refuses): that record is stepped over, as a record the folds cannot take is; read again, it would fail again, for
# ever, and stop every record behind it. SQLite says so by the exception's class; PostgreSQL by its SQLSTATE class:
# 22 data exception (a NUL, a number out of range), 23 integrity constraint, 54 program limit exceeded (an index
# entry over 2,704 bytes, which psycopg raises as an OperationalError, the class of a connection lost).
DATABASE_ERRORS = _database_errors()
SQLITE_CONTENT_ERRORS = (sqlite3.DataError, sqlite3.IntegrityError)
CONTENT_SQLSTATE_CLASSES = ("22", "23", "54")


def _store_failing(exc: BaseException) -> bool:
    if not isinstance(exc, DATABASE_ERRORS) or isinstance(exc, SQLITE_CONTENT_ERRORS):
        return False
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return not sqlstate.startswith(CONTENT_SQLSTATE_CLASSES)


WITHDRAWAL_SCHEMAS = {"tiphub.SubjectErased": "erased", "tiphub.ReportRetracted": "retracted"}
AUDIT_RECORD = "tiphub.AuditRecord"
COUNTS_TTL_S = 60.0


# Matched exactly, each indexed with (part, off); most selective first.
AUDIT_FILTER_COLUMNS = ("item", "recipient", "kind", "outcome")


def _audit_where(where: AuditFilter) -> tuple[str, tuple[Any, ...]]:
    """SQL conditions (each starting " AND ") over rm_audit's columns for a filter, and their arguments. The
    first filter given, in AUDIT_FILTER_COLUMNS' order, is the one its index serves; the others are written so
    that no index serves them (`column || ''`): an engine without statistics (SQLite) would otherwise as soon
    pick the index of the outcome every disclosure shares, and read the whole trail for one denial."""
    clauses, args = "", []
    indexed = False
    for column in AUDIT_FILTER_COLUMNS:
        value = getattr(where, column)
        if value:
            clauses += f" AND {column} = ?" if not indexed else f" AND {column} || '' = ?"
            args.append(value)
            indexed = True
    if where.actor:
        clauses += " AND substr(actor, 1, ?) = ?"
        args += [len(where.actor), where.actor]
    if where.since is not None:
        clauses += " AND at >= ?"
        args.append(_micros(where.since))
    if where.until is not None:
        clauses += " AND at < ?"
        args.append(_micros(where.until))
    return clauses, tuple(args)


def _micros(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1_000_000)


def _at(micros: int | None) -> datetime | None:
    return None if micros is None else datetime.fromtimestamp(micros / 1_000_000, UTC)


class _Decoded:
    """Decoded values by key, a bounded number kept: a record's bytes never change under its key."""

    def __init__(self, codec: WireCodec, size: int = 4096) -> None:
        self.codec = codec
        self.size = size
        self._held: OrderedDict[Any, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, key: Any, value: bytes) -> dict[str, Any]:
        with self._lock:  # routes read on threads of their own
            held = self._held.get(key)
            if held is not None:
                self._held.move_to_end(key)
                return held
        decoded: dict[str, Any] = self.codec.decode(value)[1]
        with self._lock:
            self._held[key] = decoded
            while len(self._held) > self.size:
                self._held.popitem(last=False)
        return decoded

    def clear(self) -> None:
        with self._lock:
            self._held.clear()


class StoreOfOtherTopics(RuntimeError):
    """A read-model store folded from other topics than this gateway's."""


def _where(url: str) -> str:
    """A database URL without its credentials, for a message."""
    return url.split("@")[-1] if "@" in url else url


class SqlReadModels:
    """The read models on one database. `audit_mac` and `hub_public` tell the chaining stage's entries on
    tip.audit from anything else written there (only those are shown)."""

    def __init__(
        self, url: str, topics: Topics, audit_mac: bytes, hub_public: Ed25519PublicKey, cache_size: int = 4096
    ) -> None:
        """Raises StoreOfOtherTopics for a store another hub's (or another prefix's) gateway folds: it is
        refused, never wiped under that gateway. A store in another format is rebuilt (every gateway on one
        store runs one release)."""
        self.db = Database(url)
        self.topics = topics
        self.audit_mac = audit_mac
        self.hub_public = hub_public
        self.codec = WireCodec()
        self._decoded = _Decoded(self.codec, cache_size)
        self._erased: tuple[int, frozenset[str]] | None = None  # (erasure batches folded when read, the set)
        self._erasures_folded = 0
        self._counts: tuple[float, dict[tuple[str, bool], int]] | None = None
        self._folds: dict[str, Callable[[Database, list[tuple[Record, str, dict[str, Any]]]], None]] = {
            topics.accepted: self._fold_accepted,
            topics.rejected: self._fold_rejected,
            topics.decisions: self._fold_decisions,
            topics.signals: self._fold_signals,
            topics.summaries: self._fold_summaries,
            topics.coverage: self._fold_coverage,
            topics.triage: self._fold_triage,
            topics.erasures: lambda db, rows: self._fold_withdrawals(db, rows, "erased"),
            topics.retractions: lambda db, rows: self._fold_withdrawals(db, rows, "retracted"),
            topics.audit: self._fold_audit,
        }
        try:
            self._create()
        except BaseException:
            self.db.close()
            raise

    def tailed(self) -> list[str]:
        return tailed_topics(self.topics)

    # -- schema ----------------------------------------------------------------------------
    def _create(self) -> None:
        blob = self.db.blob()
        statements = [
            "CREATE TABLE IF NOT EXISTS rm_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS rm_positions (topic TEXT NOT NULL, part INTEGER NOT NULL, "
            "next_offset BIGINT NOT NULL, last_offset BIGINT NOT NULL, last_digest TEXT NOT NULL, "
            "PRIMARY KEY (topic, part))",
            f"CREATE TABLE IF NOT EXISTS rm_accepted (report_id TEXT PRIMARY KEY, value {blob} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS rm_subject_tokens (token TEXT NOT NULL, subject_key TEXT NOT NULL, "
            "PRIMARY KEY (token, subject_key))",
            "CREATE TABLE IF NOT EXISTS rm_subject_reports (subject_key TEXT NOT NULL, report_id TEXT NOT NULL, "
            "PRIMARY KEY (subject_key, report_id))",
            "CREATE TABLE IF NOT EXISTS rm_erased (subject_key TEXT PRIMARY KEY)",
            "CREATE TABLE IF NOT EXISTS rm_retracted (report_id TEXT PRIMARY KEY)",
            "CREATE TABLE IF NOT EXISTS rm_decisions (recipient TEXT NOT NULL, report_id TEXT NOT NULL, "
            "part INTEGER NOT NULL, off BIGINT NOT NULL, allowed INTEGER NOT NULL, retain_until BIGINT, "
            f"value {blob}, PRIMARY KEY (recipient, report_id))",
            "CREATE INDEX IF NOT EXISTS rm_decisions_expiry ON rm_decisions (allowed, retain_until)",
            "CREATE INDEX IF NOT EXISTS rm_decisions_counted ON rm_decisions (recipient, allowed)",
            "CREATE TABLE IF NOT EXISTS rm_signals (scope TEXT NOT NULL, seq BIGINT NOT NULL, "
            f"signal_id TEXT NOT NULL, version INTEGER NOT NULL, value {blob} NOT NULL, PRIMARY KEY (scope, seq))",
            "CREATE TABLE IF NOT EXISTS rm_feeds (scope TEXT PRIMARY KEY, ready BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS rm_signal_latest (scope TEXT NOT NULL, signal_id TEXT NOT NULL, "
            "version INTEGER NOT NULL, seq BIGINT NOT NULL, status TEXT NOT NULL, PRIMARY KEY (scope, signal_id))",
            "CREATE INDEX IF NOT EXISTS rm_signal_latest_status ON rm_signal_latest (scope, status)",
            "CREATE TABLE IF NOT EXISTS rm_rejections (part INTEGER NOT NULL, off BIGINT NOT NULL, "
            f"agency TEXT NOT NULL, report_id TEXT NOT NULL, at BIGINT NOT NULL, value {blob} NOT NULL, "
            "PRIMARY KEY (part, off))",
            "CREATE INDEX IF NOT EXISTS rm_rejections_at ON rm_rejections (at)",
            "CREATE TABLE IF NOT EXISTS rm_submissions (part INTEGER NOT NULL, off BIGINT NOT NULL, "
            "agency TEXT NOT NULL, report_id TEXT NOT NULL, indicator_type TEXT NOT NULL, observed_at BIGINT NOT NULL, "
            "accepted_at BIGINT NOT NULL, PRIMARY KEY (part, off))",
            "CREATE INDEX IF NOT EXISTS rm_submissions_agency ON rm_submissions (agency, part, off)",
            # One row per report: a second AcceptedReport of an id (whoever wrote it) is not listed again.
            "CREATE UNIQUE INDEX IF NOT EXISTS rm_submissions_report ON rm_submissions (report_id)",
            "CREATE INDEX IF NOT EXISTS rm_rejections_agency ON rm_rejections (agency, part, off)",
            "CREATE INDEX IF NOT EXISTS rm_rejections_report ON rm_rejections (agency, report_id, part, off)",
            "CREATE TABLE IF NOT EXISTS rm_summary_events (event_id TEXT PRIMARY KEY, summary_id TEXT NOT NULL, "
            f"part INTEGER NOT NULL, off BIGINT NOT NULL, value {blob} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS rm_summary_events_of ON rm_summary_events (summary_id, part, off)",
            "CREATE TABLE IF NOT EXISTS rm_summaries (summary_id TEXT PRIMARY KEY, partner TEXT NOT NULL, "
            "status TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS rm_summaries_status ON rm_summaries (status)",
            "CREATE TABLE IF NOT EXISTS rm_partner_events (part INTEGER NOT NULL, off BIGINT NOT NULL, "
            "partner TEXT NOT NULL, summary_id TEXT NOT NULL, kind TEXT NOT NULL, at BIGINT NOT NULL, "
            "PRIMARY KEY (part, off))",
            "CREATE INDEX IF NOT EXISTS rm_partner_events_of ON rm_partner_events (partner, part, off)",
            "CREATE TABLE IF NOT EXISTS rm_triage (event_id TEXT PRIMARY KEY, signal_id TEXT NOT NULL, "
            f"part INTEGER NOT NULL, off BIGINT NOT NULL, value {blob} NOT NULL)",
            "CREATE INDEX IF NOT EXISTS rm_triage_of ON rm_triage (signal_id, part, off)",
            "CREATE TABLE IF NOT EXISTS rm_coverage (scope TEXT NOT NULL, requirement_id TEXT NOT NULL, "
            f"part INTEGER NOT NULL, off BIGINT NOT NULL, value {blob} NOT NULL, PRIMARY KEY (scope, requirement_id))",
            "CREATE TABLE IF NOT EXISTS rm_audit (part INTEGER NOT NULL, off BIGINT NOT NULL, at BIGINT NOT NULL, "
            f"seq BIGINT NOT NULL, hash {blob} NOT NULL, shown INTEGER NOT NULL, value {blob} NOT NULL, "
            "kind TEXT NOT NULL, actor TEXT NOT NULL, recipient TEXT NOT NULL, outcome TEXT NOT NULL, "
            "item TEXT NOT NULL, PRIMARY KEY (part, off))",
            "CREATE UNIQUE INDEX IF NOT EXISTS rm_audit_entry ON rm_audit (part, seq, hash)",
            # An auditor's filters by what an event is (AuditFilter): a page of a rare kind, a recipient's
            # disclosures, the denials, an item's events is found by index, not by reading every entry before it.
            *(
                f"CREATE INDEX IF NOT EXISTS rm_audit_by_{column} ON rm_audit ({column}, part, off)"
                for column in AUDIT_FILTER_COLUMNS
            ),
            "CREATE TABLE IF NOT EXISTS rm_audit_chains (part INTEGER PRIMARY KEY, macd INTEGER NOT NULL, "
            "sealed BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS rm_audit_mentions (name TEXT NOT NULL, part INTEGER NOT NULL, "
            "off BIGINT NOT NULL, PRIMARY KEY (name, part, off))",
        ]
        with self.db.transaction(immediate=True) as db:
            db.execute(statements[0])  # rm_meta: what the store holds, read before any table is touched
            held = dict(db.query("SELECT name, value FROM rm_meta"))
            identity = self._identity()
            if held and held.get("format") != identity["format"] and held.get("topics") == identity["topics"]:
                # Another format's tables may have another layout (columns added): dropped, made anew below.
                for table in self.TABLES:
                    db.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in statements:
                db.execute(statement)
            if held.get("topics", identity["topics"]) != identity["topics"]:
                theirs, ours = held["topics"].split(",")[0], identity["topics"].split(",")[0]
                raise StoreOfOtherTopics(
                    f"the read models at {_where(self.db.url)} were folded from other topics ({theirs}, ...), not "
                    f"this gateway's ({ours}, ...): give it a store of its own (TIPHUB_READ_MODEL_URL), or delete "
                    "that one if its hub is gone"
                )
            if held and held != identity:
                log.warning(
                    "read models in format %s, this release's is %s: rebuilding them",
                    held.get("format"),
                    identity["format"],
                )
                self._wipe(db)
            for name, value in self._identity().items():
                db.execute(
                    "INSERT INTO rm_meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, value)
                )

    def _identity(self) -> dict[str, str]:
        """What a store was folded from: its format and the topics' names (another hub's store, or one of
        another topic prefix, is not read: it is rebuilt)."""
        return {"format": str(READ_MODEL_FORMAT), "topics": ",".join(tailed_topics(self.topics))}

    TABLES = (
        "rm_positions",
        "rm_accepted",
        "rm_subject_tokens",
        "rm_subject_reports",
        "rm_erased",
        "rm_retracted",
        "rm_decisions",
        "rm_signals",
        "rm_feeds",
        "rm_signal_latest",
        "rm_rejections",
        "rm_submissions",
        "rm_summary_events",
        "rm_summaries",
        "rm_partner_events",
        "rm_triage",
        "rm_coverage",
        "rm_audit",
        "rm_audit_chains",
        "rm_audit_mentions",
    )

    def _wipe(self, db: Database) -> None:
        for table in self.TABLES:
            db.execute(f"DELETE FROM {table}")  # noqa: S608 (a fixed list of names)
        db.execute("DELETE FROM rm_meta")
        db.executemany("INSERT INTO rm_meta (name, value) VALUES (?, ?)", list(self._identity().items()))

    def wipe(self) -> None:
        with self.db.transaction(immediate=True) as db:
            self._wipe(db)
        self._decoded.clear()
        self._erased = None

    def close(self) -> None:
        self.db.close()

    # -- folding ---------------------------------------------------------------------------
    def positions(self) -> dict[tuple[str, int], int]:
        return {(t, p): o for t, p, o in self.db.query("SELECT topic, part, next_offset FROM rm_positions")}

    def last_folded(self) -> dict[tuple[str, int], tuple[int, str]]:
        rows = self.db.query("SELECT topic, part, last_offset, last_digest FROM rm_positions")
        return {(t, p): (offset, digest) for t, p, offset, digest in rows}

    def apply(self, records: Sequence[Record]) -> None:
        try:
            self._apply(records)
        except Exception as exc:
            if _store_failing(exc):
                raise  # the store away: the tail reads the batch again
            # A record the hub's schemas decode but this fold (or the store) cannot take (whoever may write a topic
            # may write odd values): fold the batch record by record, and step over those that fail, logged by
            # where they sit (never by content). Retrying the batch would stop every topic behind it for good.
            for record in records:
                try:
                    self._apply([record])
                except Exception as exc:
                    if _store_failing(exc):
                        raise
                    log.error(
                        "skipping %s[%d]@%d: it cannot be folded (%s)",
                        record.topic,
                        record.partition,
                        record.offset,
                        type(exc).__name__,
                    )
                    self._apply([record], fold=False)

    def _apply(self, records: Sequence[Record], fold: bool = True) -> None:
        by_topic: dict[str, list[tuple[Record, str, dict[str, Any]]]] = {}
        ends: dict[tuple[str, int], Record] = {}
        for record in records:
            key = (record.topic, record.partition)
            if key not in ends or record.offset > ends[key].offset:
                ends[key] = record
            if not fold or record.topic not in self._folds or record.value is None:
                continue
            try:
                schema, value = self.codec.decode(record.value)
            except CodecError:
                continue  # not the hub's Avro: not ours to judge, and nothing to show
            by_topic.setdefault(record.topic, []).append((record, schema.name, value))
        if not ends:
            return
        with self.db.transaction(immediate=True) as db:
            for topic, rows in by_topic.items():
                self._folds[topic](db, rows)
            db.executemany(
                "INSERT INTO rm_positions (topic, part, next_offset, last_offset, last_digest) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (topic, part) DO UPDATE SET next_offset = excluded.next_offset, "
                "last_offset = excluded.last_offset, last_digest = excluded.last_digest "
                "WHERE excluded.next_offset > rm_positions.next_offset",
                [(t, p, r.offset + 1, r.offset, record_digest(r.value)) for (t, p), r in sorted(ends.items())],
            )
        if self.topics.erasures in by_topic:
            self._erasures_folded += 1  # the erased set is read again, now that this batch's erasures committed

    def _fold_accepted(self, db: Database, rows: list[tuple[Record, str, dict[str, Any]]]) -> None:
        accepted, tokens, reports, submitted = [], [], [], []
        for record, schema, value in rows:
            if schema != "tiphub.AcceptedReport":
                continue
            report_id = value["report_id"]
            accepted.append((report_id, record.value))
            submitted.append(
                (
                    record.partition,
                    record.offset,
                    value["source_agency"],
                    report_id,
                    value["indicator_type"],
                    _micros(value["observed_at"]),
                    _micros(value["accepted_at"]),
                )
            )
            bridges = value.get("linkage_bridges") or []  # earlier key versions (a rotation's overlap)
            for i, subject in enumerate(value["subjects"]):
                key = subject["subject_key_id"]
                reports.append((key, report_id))
                found = [identifier["linkage_token"] for identifier in subject["identifiers"]]
                found += [t for bridge in bridges for t in bridge["subjects"][i]["identifier_tokens"]]
                tokens += [(token, key) for token in found]
        db.executemany("INSERT INTO rm_accepted (report_id, value) VALUES (?, ?) ON CONFLICT DO NOTHING", accepted)
        db.executemany("INSERT INTO rm_submissions VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", submitted)
        db.executemany("INSERT INTO rm_subject_tokens VALUES (?, ?) ON CONFLICT DO NOTHING", tokens)
        db.executemany("INSERT INTO rm_subject_reports VALUES (?, ?) ON CONFLICT DO NOTHING", reports)

    def _fold_rejected(self, db: Database, rows: list[tuple[Record, str, dict[str, Any]]]) -> None:
        db.executemany(
            "INSERT INTO rm_rejections (part, off, agency, report_id, at, value) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [
                (
                    r.partition,
                    r.offset,
                    value["source_agency"] or "",
                    value["report_id"],
                    _micros(value["rejected_at"]),
                    r.value,
                )
                for r, schema, value in rows
                if schema == "tiphub.RejectedReport"
            ],
        )

    def _fold_decisions(self, db: Database, rows: list[tuple[Record, str, dict[str, Any]]]) -> None:
        db.executemany(
            "INSERT INTO rm_decisions (recipient, report_id, part, off, allowed, retain_until, value) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (recipient, report_id) DO UPDATE SET part = excluded.part, "
            "off = excluded.off, allowed = excluded.allowed, retain_until = excluded.retain_until, "
            "value = excluded.value WHERE excluded.off > rm_decisions.off OR excluded.part <> rm_decisions.part",
            [
                (
                    value["recipient"],
                    value["item_id"],
                    r.partition,
                    r.offset,
                    int(bool(value["allowed"])),
                    _micros(value.get("retain_until")),
                    r.value,
                )
                for r, schema, value in rows
                if schema == "tiphub.SharingDecision" and value.get("item_kind") == "report"
            ],
        )

    def _fold_signals(self, db: Database, rows: list[tuple[Record, str, dict[str, Any]]]) -> None:
        fresh = [
            (value["scope"], value["seq"], value["signal_id"], value["version"], r.value)
            for r, schema, value in rows
            if schema == "tiphub.Signal" and value["scope"] != HUB_SCOPE and value["seq"] > 0
        ]  # the hub's own scope is served to nobody, so not kept
        db.executemany(
            "INSERT INTO rm_signals (scope, seq, signal_id, version, value) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            fresh,
        )
        for scope in sorted({row[0] for row in fresh}):
            self._advance_feed(db, scope)

    def _advance_feed(self, db: Database, scope: str) -> None:
        """Move the scope's feed past every version now contiguous, and keep each signal's latest."""
        held = db.query("SELECT ready FROM rm_feeds WHERE scope = ?", (scope,))
        ready = held[0][0] if held else 0
        start = ready
        while True:
            found = db.query(
                "SELECT seq, signal_id, version, value FROM rm_signals WHERE scope = ? AND seq > ? "
                "ORDER BY seq LIMIT 1000",
                (scope, ready),
            )
            latest = []
            for seq, signal_id, version, value in found:
                if seq != ready + 1:
                    break  # a gap: what comes after it waits
                ready = seq
                latest.append((scope, signal_id, version, seq, self.codec.decode(value)[1]["status"]))
            db.executemany(
                "INSERT INTO rm_signal_latest (scope, signal_id, version, seq, status) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (scope, signal_id) DO UPDATE SET version = excluded.version, seq = excluded.seq, "
                "status = excluded.status WHERE excluded.version > rm_signal_latest.version",
                latest,
            )
            if len(latest) < 1000:
                break
        if ready != start:
            db.execute(
                "INSERT INTO rm_feeds (scope, ready) VALUES (?, ?) ON CONFLICT (scope) DO UPDATE SET "
                "ready = excluded.ready WHERE excluded.ready > rm_feeds.ready",
                (scope, ready),
            )

    def _fold_summaries(self, db: Database, rows: list[tuple[Record, str, dict[str, Any]]]) -> None:
        events = [(r, value) for r, schema, value in rows if schema == "tiphub.SummaryEvent"]
        db.executemany(
            "INSERT INTO rm_summary_events (event_id, summary_id, part, off, value) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(value["event_id"], value["summary_id"], r.partition, r.offset, r.value) for r, value in events],
        )
        touched = sorted({value["summary_id"] for _, value in events})
        for summary_id in touched:
            summary = self._summary(db, summary_id)
            if summary is not None:
                db.execute(
                    "INSERT INTO rm_summaries (summary_id, partner, status) VALUES (?, ?, ?) "
                    "ON CONFLICT (summary_id) DO UPDATE SET partner = excluded.partner, status = excluded.status",
                    (summary_id, summary.partner, summary.status),
                )
        shown = []
        for r, value in events:
            if value["kind"] not in ("released", "withdrawn"):
                continue
            found = db.query("SELECT partner FROM rm_summaries WHERE summary_id = ?", (value["summary_id"],))
            if found:
                shown.append(
                    (r.partition, r.offset, found[0][0], value["summary_id"], value["kind"], _micros(value["at"]))
                )
        db.executemany(
            "INSERT INTO rm_partner_events (part, off, partner, summary_id, kind, at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            shown,
        )

    def _summary(self, db: Database, summary_id: str) -> Summary | None:
        """One summary, folded from its events (a handful) by the release rules' own fold."""
        book = SummaryBook()
        for (value,) in db.query(
            "SELECT value FROM rm_summary_events WHERE summary_id = ? ORDER BY part, off", (summary_id,)
        ):
            book.apply(self.codec.decode(value)[1])
        return book.summaries.get(summary_id)

    def _fold_triage(self, db: Database, rows: list[tuple[Record, str, dict[str, Any]]]) -> None:
        db.executemany(
            "INSERT INTO rm_triage (event_id, signal_id, part, off, value) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [
                (value["event_id"], value["signal_id"], r.partition, r.offset, r.value)
                for r, schema, value in rows
                if schema == "tiphub.TriageEvent"
            ],
        )

    def _fold_coverage(self, db: Database, rows: list[tuple[Record, str, dict[str, Any]]]) -> None:
        db.executemany(
            "INSERT INTO rm_coverage (scope, requirement_id, part, off, value) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (scope, requirement_id) DO UPDATE SET part = excluded.part, off = excluded.off, "
            "value = excluded.value WHERE excluded.off > rm_coverage.off OR excluded.part <> rm_coverage.part",
            [
                (value["scope"], value["requirement_id"], r.partition, r.offset, r.value)
                for r, schema, value in rows
                if schema == "tiphub.Coverage"
            ],
        )

    def _fold_withdrawals(self, db: Database, rows: list[tuple[Record, str, dict[str, Any]]], kind: str) -> None:
        """Only facts of the topic's own kind count (domain/withdrawals.py): whoever may write one of the
        two topics cannot withdraw through it what only the other withdraws."""
        facts = [
            value for _, schema, value in rows if WITHDRAWAL_SCHEMAS.get(schema) == kind and kind_of(value) == kind
        ]
        if kind == "erased":
            db.executemany(
                "INSERT INTO rm_erased (subject_key) VALUES (?) ON CONFLICT DO NOTHING",
                [(f["subject_key_id"],) for f in facts],
            )
        else:
            db.executemany(
                "INSERT INTO rm_retracted (report_id) VALUES (?) ON CONFLICT DO NOTHING",
                [(f["report_id"],) for f in facts],
            )

    def _fold_audit(self, db: Database, rows: list[tuple[Record, str, dict[str, Any]]]) -> None:
        """The chaining stage's entries, told from anything else written to tip.audit as the verifier tells
        them (domain/audit_chain.py), one record at a time: an entry is shown when its MAC verifies; an entry
        without one only in a partition's legacy prefix, once a signed checkpoint after it seals it."""
        topic = self.topics.audit
        for record, schema, value in rows:
            if schema != AUDIT_RECORD:
                continue
            partition = record.partition
            reason = forgery(topic, partition, value, self.audit_mac, self.hub_public)
            held = db.query("SELECT macd, sealed FROM rm_audit_chains WHERE part = ?", (partition,))
            macd, sealed = (bool(held[0][0]), held[0][1]) if held else (False, -1)
            if value["event"] is None:  # a signed checkpoint
                if reason is None and not macd and value["seq"] > sealed:
                    db.execute(
                        "UPDATE rm_audit SET shown = 1 WHERE part = ? AND shown = 0 AND off < ?",
                        (partition, record.offset),
                    )
                    self._chain(db, partition, macd, value["seq"])
                continue
            if unusable(value) is not None:
                continue
            if reason is None:
                shown = 1
                if not macd:
                    self._chain(db, partition, True, sealed)
            elif reason == NO_MAC and not macd:
                shown = 0  # legacy: shown once a checkpoint seals it
            else:
                continue
            try:
                event = self.codec.decode(value["event"], expect="tiphub.AuditEvent")[1]
            except CodecError:
                continue
            inserted = db.execute(
                "INSERT INTO rm_audit (part, off, at, seq, hash, shown, value, kind, actor, recipient, outcome, item) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    partition,
                    record.offset,
                    _micros(event["at"]),
                    value["seq"],
                    value["hash"],
                    shown,
                    value["event"],
                    event["kind"],
                    event["actor"],
                    event["recipient"] or "",
                    event["outcome"],
                    event["item_id"] or "",
                ),
            )
            if inserted:
                names = {*event["subject_refs"], event["item_id"], *_strings(audit_detail(event).get("reports"))}
                db.executemany(
                    "INSERT INTO rm_audit_mentions (name, part, off) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    [(name, partition, record.offset) for name in sorted(n for n in names if n)],
                )

    @staticmethod
    def _chain(db: Database, partition: int, macd: bool, sealed: int) -> None:
        db.execute(
            "INSERT INTO rm_audit_chains (part, macd, sealed) VALUES (?, ?, ?) ON CONFLICT (part) DO UPDATE SET "
            # never back: once a partition has a MAC'd entry, no entry without one is legacy again
            "macd = CASE WHEN excluded.macd > rm_audit_chains.macd THEN excluded.macd ELSE rm_audit_chains.macd END, "
            "sealed = CASE WHEN excluded.sealed > rm_audit_chains.sealed THEN excluded.sealed "
            "ELSE rm_audit_chains.sealed END",
            (partition, int(macd), sealed),
        )

    def expire(self, now: datetime) -> int:
        """Decided views past their retention go: the decision stays (not allowed), its view does not. And
        rejections go once tip.reports.rejected itself no longer keeps them."""
        kept_ms = next(spec.retention_ms for spec in self.topics.specs() if spec.name == self.topics.rejected)
        with self.db.transaction(immediate=True) as db:
            expired = db.execute(
                "UPDATE rm_decisions SET allowed = 0, value = NULL WHERE allowed = 1 AND retain_until IS NOT NULL "
                "AND retain_until <= ?",
                (_micros(now),),
            )
            if kept_ms > 0:
                expired += db.execute("DELETE FROM rm_rejections WHERE at < ?", ((_micros(now) or 0) - kept_ms * 1000,))
            return expired

    def folded(self, event_id: str) -> bool:
        return bool(
            self.db.query("SELECT 1 FROM rm_summary_events WHERE event_id = ?", (event_id,))
            or self.db.query("SELECT 1 FROM rm_triage WHERE event_id = ?", (event_id,))
        )

    # -- queries ---------------------------------------------------------------------------
    def accepted(self, report_id: str) -> dict[str, Any] | None:
        found = self.db.query("SELECT value FROM rm_accepted WHERE report_id = ?", (report_id,))
        return self._decoded(("accepted", report_id), found[0][0]) if found else None

    def header(self, report_id: str) -> ReportHeader | None:
        accepted = self.accepted(report_id)
        return header_of(accepted) if accepted is not None else None

    def subject_keys(self, linkage_token: str) -> set[str]:
        rows = self.db.query("SELECT subject_key FROM rm_subject_tokens WHERE token = ?", (linkage_token,))
        return {key for (key,) in rows}

    def reports_naming(self, subject_keys: Collection[str]) -> set[str]:
        found: set[str] = set()
        for key in subject_keys:
            rows = self.db.query("SELECT report_id FROM rm_subject_reports WHERE subject_key = ?", (key,))
            found.update(report_id for (report_id,) in rows)
        return found

    def retracted(self, report_id: str) -> bool:
        return bool(self.db.query("SELECT 1 FROM rm_retracted WHERE report_id = ?", (report_id,)))

    def erased(self) -> frozenset[str]:
        """Erasures are few: the set is held, and read again once a batch with an erasure has committed. A
        set read while one committed is not held (it may predate it)."""
        folded = self._erasures_folded
        if self._erased is not None and self._erased[0] == folded:
            return self._erased[1]
        found = frozenset(key for (key,) in self.db.query("SELECT subject_key FROM rm_erased"))
        if self._erasures_folded == folded:
            self._erased = (folded, found)
        return found

    def decision(self, recipient: str, report_id: str) -> Decided | None:
        found = self.db.query(
            "SELECT allowed, retain_until, value FROM rm_decisions WHERE recipient = ? AND report_id = ?",
            (recipient, report_id),
        )
        return self._decided(*found[0]) if found else None

    def _decided(self, allowed: Any, retain_until: int | None, value: bytes | None) -> Decided:
        if value is None:  # past its retention: its view is gone
            return Decided(False, _at(retain_until), {}, None, ())
        decided = self.codec.decode(value)[1]
        fields = tuple(decided.get("fields") or ())
        return Decided(
            bool(allowed), decided.get("retain_until"), field_rules(fields), decided.get("view_json"), fields
        )

    def decision_counts(self) -> dict[tuple[str, bool], int]:
        """Counted over every decision (an index scan: a second or so at 10^7), so counted at most once a
        minute: an auditors' metric, not a query any page waits on."""
        now = time.monotonic()
        if self._counts is None or now - self._counts[0] > COUNTS_TTL_S:
            rows = self.db.query("SELECT recipient, allowed, COUNT(*) FROM rm_decisions GROUP BY recipient, allowed")
            self._counts = (now, {(recipient, bool(allowed)): n for recipient, allowed, n in rows})
        return dict(self._counts[1])

    def signal_versions(self, scope: str, after: int, limit: int) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT s.seq, s.value FROM rm_signals s JOIN rm_feeds f ON f.scope = s.scope "
            "WHERE s.scope = ? AND s.seq > ? AND s.seq <= f.ready ORDER BY s.seq LIMIT ?",
            (scope, after, limit),
        )
        return [self._decoded(("signal", scope, seq), value) for seq, value in rows]

    def latest_signal(self, scope: str, signal_id: str) -> dict[str, Any] | None:
        rows = self.db.query(
            "SELECT s.seq, s.value FROM rm_signal_latest l JOIN rm_signals s ON s.scope = l.scope AND s.seq = l.seq "
            "WHERE l.scope = ? AND l.signal_id = ?",
            (scope, signal_id),
        )
        return self._decoded(("signal", scope, rows[0][0]), rows[0][1]) if rows else None

    def latest_signals(self, scope: str, status: str) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT s.seq, s.value FROM rm_signal_latest l JOIN rm_signals s ON s.scope = l.scope AND s.seq = l.seq "
            "WHERE l.scope = ? AND l.status = ? ORDER BY l.signal_id",
            (scope, status),
        )
        return [self._decoded(("signal", scope, seq), value) for seq, value in rows]

    def versions_held(self) -> int:
        return int(self.db.query("SELECT COALESCE(SUM(ready), 0) FROM rm_feeds")[0][0])

    def rejection(self, agency: str | None, report_id: str) -> dict[str, Any] | None:
        rows = self.db.query(
            "SELECT part, off, value FROM rm_rejections WHERE agency = ? AND report_id = ? "
            "ORDER BY off DESC, part DESC LIMIT 1",
            (agency or "", report_id),
        )
        return self._decoded(("rejected", rows[0][0], rows[0][1]), rows[0][2]) if rows else None

    def submissions(
        self, agency: str, after: tuple[int, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
        found = self.db.query(
            "SELECT report_id, indicator_type, observed_at, accepted_at FROM rm_submissions WHERE agency = ? "
            "AND (observed_at > ? OR (observed_at = ? AND report_id > ?)) ORDER BY observed_at, report_id LIMIT ?",
            (agency, *((after[0], after[0], after[1]) if after else (-(1 << 62), -(1 << 62), "")), limit),
        )
        # Not when each was accepted: reports accepted in one batch share that time, and which ones did would tell
        # an agency how much else the hub was taking in (the noninterference suite found it).
        out = [{"report_id": r, "indicator_type": kind, "observed_at": _at(seen)} for r, kind, seen, _ in found]
        last = (found[-1][2], found[-1][0]) if found else after
        return out, last

    def rejections(self, agency: str, after: Position, limit: int) -> tuple[list[dict[str, Any]], Position]:
        rows = _merged(
            after,
            limit,
            lambda part, start: self.db.query(
                "SELECT part, off, value FROM rm_rejections WHERE agency = ? AND part = ? AND off >= ? "
                "ORDER BY off LIMIT ?",
                (agency, part, start, limit),
            ),
            lambda row: (row[1], row[0]),
        )
        position = list(after)
        out = []
        for part, off, value in rows:
            position[part] = off + 1
            out.append(self._decoded(("rejected", part, off), value))
        return out, position

    def summary(self, summary_id: str) -> Summary | None:
        return self._summary(self.db, summary_id)

    def pending_summaries(self) -> list[Summary]:
        rows = self.db.query("SELECT summary_id FROM rm_summaries WHERE status = 'pending' ORDER BY summary_id")
        return [s for (summary_id,) in rows if (s := self._summary(self.db, summary_id)) is not None]

    def partner_events(
        self, partner: str, after: Position, limit: int
    ) -> tuple[list[tuple[PartnerEvent, Summary]], Position]:
        rows = _merged(
            after,
            limit,
            lambda part, start: self.db.query(
                "SELECT part, off, summary_id, kind, at FROM rm_partner_events WHERE partner = ? AND part = ? "
                "AND off >= ? ORDER BY off LIMIT ?",
                (partner, part, start, limit),
            ),
            lambda row: (row[4], row[0], row[1]),
        )
        position = list(after)
        out = []
        for part, off, summary_id, kind, at in rows:
            position[part] = off + 1
            summary = self._summary(self.db, summary_id)
            if summary is not None:
                out.append((PartnerEvent(part, off, summary_id, kind, _at(at) or datetime.min), summary))
        return out, position

    def triage_events(self, signal_id: str) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT event_id, value FROM rm_triage WHERE signal_id = ? ORDER BY part, off", (signal_id,)
        )
        return [self._decoded(("triage", event_id), value) for event_id, value in rows]

    def triage_state(self, signal_id: str) -> str:
        rows = self.db.query(
            "SELECT event_id, value FROM rm_triage WHERE signal_id = ? ORDER BY part DESC, off DESC LIMIT 1",
            (signal_id,),
        )
        return str(self._decoded(("triage", rows[0][0]), rows[0][1])["state"]) if rows else "new"

    def page_facts(self, acts_for: str, report_ids: Collection[str], signal_ids: Collection[str]) -> PageFacts:
        headers: dict[str, ReportHeader] = {}
        retracted: set[str] = set()
        decisions: dict[str, Decided] = {}
        triage: dict[str, str] = {}
        for ids in _chunks(sorted(set(report_ids))):
            marks = ",".join("?" * len(ids))  # placeholders only: the ids are parameters
            accepted = f"SELECT report_id, value FROM rm_accepted WHERE report_id IN ({marks})"  # noqa: S608
            for report_id, value in self.db.query(accepted, ids):
                headers[report_id] = header_of(self._decoded(("accepted", report_id), value))
            withdrawn = f"SELECT report_id FROM rm_retracted WHERE report_id IN ({marks})"  # noqa: S608
            retracted.update(report_id for (report_id,) in self.db.query(withdrawn, ids))
            decided = f"SELECT report_id, allowed, retain_until, value FROM rm_decisions WHERE recipient = ? AND report_id IN ({marks})"  # noqa: S608, E501
            for report_id, *row in self.db.query(decided, (acts_for, *ids)):
                decisions[report_id] = self._decided(*row)
        for ids in _chunks(sorted(set(signal_ids))):
            marks = ",".join("?" * len(ids))
            events = f"SELECT signal_id, part, off, event_id, value FROM rm_triage WHERE signal_id IN ({marks})"  # noqa: S608
            latest = {row[0]: row for row in sorted(self.db.query(events, ids), key=lambda row: row[:3])}
            for signal_id, _, _, event_id, value in latest.values():  # the last by (partition, offset) wins
                triage[signal_id] = str(self._decoded(("triage", event_id), value)["state"])
        return PageFacts(acts_for, headers, frozenset(retracted), decisions, triage)

    def coverage(self, scope: str) -> dict[str, dict[str, Any]]:
        rows = self.db.query("SELECT requirement_id, value FROM rm_coverage WHERE scope = ?", (scope,))
        return {requirement_id: self.codec.decode(value)[1] for requirement_id, value in rows}

    def audit_events(
        self, after: Position, limit: int, where: AuditFilter | None = None
    ) -> tuple[list[tuple[int, dict[str, Any]]], Position]:
        clauses, args = _audit_where(where or AuditFilter())
        rows = _merged(
            after,
            limit,
            lambda part, start: self.db.query(
                f"SELECT part, off, at, value FROM rm_audit WHERE shown = 1 AND part = ? AND off >= ?{clauses} "  # noqa: S608
                "ORDER BY off LIMIT ?",
                (part, start, *args, limit),
            ),
            lambda row: (row[2], row[0], row[1]),
        )
        position = list(after)
        out = []
        for part, off, _, value in rows:
            position[part] = off + 1
            out.append((part, self._decoded(("audit", part, off), value)))
        return out, position

    def audit_mentioning(self, keys: Collection[str]) -> list[dict[str, Any]]:
        found: set[tuple[int, int]] = set()
        for name in keys:
            found.update(
                (part, off)
                for part, off in self.db.query("SELECT part, off FROM rm_audit_mentions WHERE name = ?", (name,))
            )
        rows = []
        for part, off in found:
            held = self.db.query("SELECT at, value FROM rm_audit WHERE part = ? AND off = ? AND shown = 1", (part, off))
            if held:
                rows.append((held[0][0], part, off, held[0][1]))
        return [self._decoded(("audit", part, off), value) for _, part, off, value in sorted(rows)]


def _chunks(items: list[str], size: int = 400) -> list[list[str]]:
    """IN lists short enough for any SQLite build (999 parameters at least) and for PostgreSQL."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def tailed_topics(topics: Topics) -> list[str]:
    """The topics the read models are folded from."""
    return [
        topics.accepted,
        topics.rejected,
        topics.decisions,
        topics.signals,
        topics.summaries,
        topics.coverage,
        topics.triage,
        topics.erasures,
        topics.retractions,
        topics.audit,
    ]


def _strings(found: Any) -> list[str]:
    return [s for s in found if isinstance(s, str)] if isinstance(found, list) else []


def _merged(
    after: Position,
    limit: int,
    fetch: Callable[[int, int], list[tuple[Any, ...]]],
    order: Callable[[tuple[Any, ...]], Any],
) -> list[tuple[Any, ...]]:
    """Up to `limit` rows after `after`: at most `limit` of each partition, each partition's in offset
    order, merged by `order` (the merge takes each partition's rows in offset order, so a row not taken
    stays after the position the page ends at, and none is skipped)."""
    streams = [fetch(part, start) for part, start in enumerate(after)]
    return list(islice(heapq.merge(*streams, key=order), limit))  # takes heads only: offset order holds
