"""When the hub retires an earlier linkage key (tiphub/key_rotation.retire_linkage_key): never the current
one or one not live; not while readable reports carry it alone, unless forced; and the reports are looked
for only once the version may be retired at all."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from tiphub.key_rotation import KeyIsCurrent, KeyStillNeeded, NoSuchKey, retire_linkage_key, rotate_linkage_key
from tiphub.keys import KeyStore


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    store = KeyStore(tmp_path)
    store.init(agencies=())
    return store


class Stranded:
    """The check a caller passes: records what it was asked, answers with `reports`."""

    def __init__(self, *reports: str) -> None:
        self.reports = list(reports)
        self.asked: list[tuple[int, set[int]]] = []

    def __call__(self, version: int, live: Collection[int]) -> list[str]:
        self.asked.append((version, set(live)))
        return self.reports


def test_a_rotation_makes_a_new_current_version_and_keeps_the_earlier_live(store: KeyStore) -> None:
    assert rotate_linkage_key(store).version == 2
    rotated = rotate_linkage_key(store)
    assert (rotated.version, rotated.earlier) == (3, [1, 2])


def test_the_current_version_and_one_not_live_are_refused_before_any_report_is_read(store: KeyStore) -> None:
    rotate_linkage_key(store)
    check = Stranded()
    with pytest.raises(KeyIsCurrent):
        retire_linkage_key(store, 2, check)
    with pytest.raises(NoSuchKey):
        retire_linkage_key(store, 7, check)
    assert check.asked == []
    assert set(store.linkage_keys()) == {1, 2}


def test_a_version_readable_reports_carry_alone_is_kept_unless_forced(store: KeyStore) -> None:
    rotate_linkage_key(store)
    check = Stranded("r1", "r2")
    with pytest.raises(KeyStillNeeded) as refused:
        retire_linkage_key(store, 1, check)
    assert refused.value.count == 2 and check.asked == [(1, {1, 2})]
    assert set(store.linkage_keys()) == {1, 2}
    retire_linkage_key(store, 1, None)  # --force: e.g. the key is compromised
    assert set(store.linkage_keys()) == {2}


def test_a_version_no_readable_report_needs_alone_is_retired(store: KeyStore) -> None:
    rotate_linkage_key(store)
    retire_linkage_key(store, 1, Stranded())
    assert set(store.linkage_keys()) == {2}
