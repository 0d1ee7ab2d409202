"""The gateway's token buckets (pure): a burst, then refusals, then refill at the rate."""

from __future__ import annotations

from gateway.limits import MAX_BUCKETS, RateLimiter


def test_a_burst_is_allowed_then_refused_until_the_bucket_refills() -> None:
    limiter = RateLimiter(rate=2.0, burst=5)
    assert [limiter.take("k", 0.0)[0] for _ in range(7)] == [True] * 5 + [False] * 2
    allowed, wait_s, _ = limiter.take("k", 0.0)
    assert not allowed and 0.4 < wait_s <= 0.5  # one token comes back in half a second at 2/s
    assert limiter.take("k", 0.5)[0] and not limiter.take("k", 0.5)[0]
    assert sum(limiter.take("k", 10.0)[0] for _ in range(10)) == 5  # refills to the burst, never beyond


def test_keys_have_their_own_buckets_and_a_zero_rate_means_no_limit() -> None:
    limiter = RateLimiter(rate=1.0, burst=1)
    assert limiter.take("a", 0.0)[0] and not limiter.take("a", 0.0)[0]
    assert limiter.take("b", 0.0)[0]
    unlimited = RateLimiter(rate=0, burst=1)
    assert all(unlimited.take("a", 0.0)[0] for _ in range(1000))


def test_the_bucket_table_stays_bounded_under_a_flood_of_distinct_keys() -> None:
    limiter = RateLimiter(rate=1.0, burst=3)
    for i in range(MAX_BUCKETS + 5_000):
        limiter.take(f"key-{i}", float(i) / 1e6)
    assert len(limiter.buckets) <= MAX_BUCKETS
