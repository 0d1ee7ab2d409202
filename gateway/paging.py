"""Pages of the feeds the gateway serves: a scope's signal versions, a partner's summaries, and the
records of a topic read in log order (rejections, the audit trail).

A position is what a sealed cursor carries (gateway/cursors.py): a place in the scope's feed, or one
offset per partition of the topic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from gateway.folds import SignalFeeds, SummaryLog
from gateway.visibility import UNKNOWN, Visibility

SignalPage = tuple[list[tuple[dict[str, Any], int]], int]  # (shown, position after it), position after the page
PartnerPage = tuple[list[dict[str, Any]], list[int]]  # events, offsets after the page


def signal_page(feeds: SignalFeeds, visibility: Visibility, scope: str, position: int, limit: int) -> SignalPage:
    """Signal versions of the scope from `position` in its feed, each with the position just after it, and
    the position after the page. A version none of whose reports the scope may see any more is stepped
    over; one whose reports are still on their way ends the page."""
    feed = feeds.feed(scope)
    items: list[tuple[dict[str, Any], int]] = []
    if feed is None:
        return items, position
    now = datetime.now(UTC)
    while position < len(feed.versions) and len(items) < limit:
        shown = visibility.render(scope, feed.versions[position], now)
        if shown is UNKNOWN:
            break
        position += 1
        if isinstance(shown, dict):
            items.append((shown, position))
    return items, position


def partner_page(
    summaries: SummaryLog, partner: str, cursor: list[int], limit: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """Release and withdrawal events of this partner's summaries after `cursor`, in log order."""
    position = list(cursor)
    items: list[dict[str, Any]] = []
    for partition, offset, summary_id, kind, _ in list(summaries.partner_log):
        if offset < position[partition]:
            continue
        position[partition] = offset + 1
        summary = summaries.book.summaries.get(summary_id)
        if summary is None or summary.partner != partner:
            continue
        items.append({"event": kind, **summary.for_partner()})
        if len(items) >= limit:
            break
    return items, position


def log_page(
    records: Iterable[tuple[int, int, dict[str, Any]]],
    position: list[int],
    limit: int,
    shown: Callable[[int, dict[str, Any]], dict[str, Any] | None],
) -> tuple[list[dict[str, Any]], list[int]]:
    """Up to `limit` items of (partition, offset, record) rows after `position` (one offset per partition),
    each as `shown(partition, record)` makes it, or left out where that is None; and the position after
    them (past the left-out records too)."""
    position = list(position)
    items: list[dict[str, Any]] = []
    for partition, offset, record in records:
        if offset < position[partition]:
            continue
        if len(items) >= limit:
            break
        position[partition] = offset + 1
        item = shown(partition, record)
        if item is not None:
            items.append(item)
    return items, position
