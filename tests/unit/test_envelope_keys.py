"""Hub envelope keys per epoch: the current and next are offered, each opens only what was sealed for it,
and once destroyed it is gone for good (a later request never makes it again)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.memory.vault import InMemoryKeyVault
from domain.envelope_keys import EnvelopeKeys

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def test_the_current_and_next_epoch_keys_are_offered_and_open_what_was_sealed_for_them() -> None:
    keys = EnvelopeKeys(InMemoryKeyVault(), epoch_s=3600)
    now, after = keys.offered(T0)
    assert now.not_before <= T0 < now.not_after == after.not_before
    assert keys.current(T0) == (now.key_id, now.public_key)
    assert keys.current(T0 + timedelta(hours=1))[0] == after.key_id != now.key_id
    private = keys.private(now.key_id)
    assert private is not None and private.public_key().public_bytes_raw() == now.public_key.public_bytes_raw()
    # Another epoch's number with this key's fingerprint, or garbage, opens nothing.
    assert keys.private(now.key_id.replace(str(keys.epoch(T0)), str(keys.epoch(T0) + 1))) is None
    assert keys.private("hub-epoch/x/y") is None and keys.private("hub-epoch/99999/zz") is None


def test_an_epoch_key_is_destroyed_once_expired_and_never_made_again_for_opening() -> None:
    vault = InMemoryKeyVault()
    keys = EnvelopeKeys(vault, epoch_s=60)
    old_id, _ = keys.current(T0)
    keys.offered(T0 + timedelta(minutes=5))
    assert keys.expired(T0 + timedelta(minutes=5), keep_s=120) == [keys.epoch(T0)]
    assert keys.expired(T0 + timedelta(minutes=2), keep_s=120) == []  # not past the envelope age limit yet
    assert keys.destroy(keys.epoch(T0))
    assert keys.private(old_id) is None
    assert keys.private(old_id) is None  # looking up never makes it again
    assert keys.epoch(T0) not in keys.held()
    fresh = EnvelopeKeys(vault, epoch_s=60)  # another process: nothing cached brings it back either
    assert fresh.private(old_id) is None
