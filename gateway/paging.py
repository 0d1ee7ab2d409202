"""Pages of the feeds the gateway serves: a scope's signal versions and a partner's summaries, read by
index from the read models (domain/read_models.py).

A position is what a sealed cursor carries (gateway/cursors.py): a place in the scope's feed, or one
offset per partition of the topic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domain.read_models import ReadModels
from gateway.visibility import UNKNOWN, Visibility

SignalPage = tuple[list[tuple[dict[str, Any], int]], int]  # (shown, position after it), position after the page
PartnerPage = tuple[list[dict[str, Any]], list[int]]  # events, offsets after the page
READ_AHEAD = 200  # versions read per query while a page steps over versions the caller may not see
MOST_READ = 2000  # versions one page reads at most


def signal_page(
    views: ReadModels, visibility: Visibility, scope: str, position: int, limit: int, most_read: int = MOST_READ
) -> SignalPage:
    """Signal versions of the scope from `position` in its feed, each with the position just after it, and
    the position after the page. A version none of whose reports the scope may see any more is stepped
    over; one whose reports are still on their way ends the page. At most `most_read` versions are read for
    one page (a long run of versions the scope may no longer see ends it early, with the position after
    them): what one request costs is bounded, whatever the history."""
    items: list[tuple[dict[str, Any], int]] = []
    now = datetime.now(UTC)
    read = 0
    while len(items) < limit and read < most_read:
        versions = views.signal_versions(scope, position, min(max(limit - len(items), READ_AHEAD), most_read - read))
        read += len(versions)
        lookups = visibility.page_lookups(scope, versions)
        for version in versions:
            shown = visibility.render(scope, version, now, lookups)
            if shown is UNKNOWN:
                return items, position
            position = version["seq"]
            if isinstance(shown, dict):
                items.append((shown, position))
                if len(items) >= limit:
                    return items, position
        if not versions:
            break
    return items, position


def partner_page(views: ReadModels, partner: str, cursor: list[int], limit: int) -> PartnerPage:
    """Release and withdrawal events of this partner's summaries after `cursor`, in log order."""
    events, position = views.partner_events(partner, cursor, limit)
    return [{"event": event.kind, **summary.for_partner()} for event, summary in events], position
