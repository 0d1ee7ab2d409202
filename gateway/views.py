"""What the gateway knows, tailed from the topics: one fold per topic (gateway/folds.py) behind a
dispatcher. Every view is rebuilt from Kafka at start (adapters/kafka/tail.py reads the topics from their
beginning into `HubViews.apply`).

What a caller is shown of it is decided in gateway/visibility.py; a caller is served only from their
own scope (their agency or partner).
"""

from __future__ import annotations

from domain.log import Record
from gateway.folds import (
    AcceptedReports,
    CoverageBoard,
    Decisions,
    Event,
    Fold,
    Rejections,
    SignalFeeds,
    SummaryLog,
    TriageLog,
    WithdrawalFold,
    Withdrawn,
)
from schemas.codec import CodecError, WireCodec
from streams.topics import Topics


class HubViews:
    """The folds of the tailed topics, and the dispatcher that hands each record to its topic's fold."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.codec = WireCodec()
        self.accepted = AcceptedReports()
        self.rejected = Rejections()
        self.decisions = Decisions()
        self.signals = SignalFeeds()
        self.summaries = SummaryLog()
        self.coverage = CoverageBoard()
        self.triage = TriageLog()
        self.withdrawn = Withdrawn()
        self.folds: dict[str, Fold] = {
            topics.accepted: self.accepted,
            topics.rejected: self.rejected,
            topics.decisions: self.decisions,
            topics.signals: self.signals,
            topics.summaries: self.summaries,
            topics.coverage: self.coverage,
            topics.triage: self.triage,
            topics.erasures: WithdrawalFold(self.withdrawn, "erased"),
            topics.retractions: WithdrawalFold(self.withdrawn, "retracted"),
        }

    def tailed(self) -> list[str]:
        """The topics folded here, each to be read from its beginning."""
        return list(self.folds)

    def apply(self, record: Record) -> None:
        """Fold one record into its topic's view; a record that does not decode is skipped."""
        fold = self.folds.get(record.topic)
        if fold is None:
            return
        try:
            schema, value = self.codec.decode(record.value)
        except CodecError:
            return
        fold.apply(Event(record.partition, record.offset, schema.name, value))

    def folded(self, event_id: str) -> bool:
        """Whether a summary or triage event (one this gateway wrote, say) has been folded."""
        return event_id in self.summaries.book.seen or event_id in self.triage.seen
