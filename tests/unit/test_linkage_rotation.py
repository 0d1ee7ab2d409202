"""Linkage key rotation: reports accepted before, during and after a rotation still link.

One accept stage runs throughout, as a worker would: the rotation and the retirement happen on
disk, and the stage picks them up at its next reload (made immediate here).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from adapters.memory.vault import InMemoryKeyVault
from adapters.sql.database import Database
from adapters.sql.registry import KeyRegistry
from domain.correlate import Correlator
from domain.facts import facts_from_accepted
from domain.linkage import LinkageKey, Linker, stranded_by_retiring
from domain.linking import KeyIndex, Link, sightings_of
from schemas.codec import WireCodec
from streams.accept import AcceptStage, Submission
from tests.correlation_kit import PLAN
from tests.envelopes import EnvelopeKit
from tests.factories import make_report
from tiphub.keys import KeyStore
from tiphub.runtime import init_keys
from tiphub.settings import Settings


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    init_keys(Settings(home=tmp_path))
    return KeyStore(tmp_path)


@pytest.fixture
def vault() -> InMemoryKeyVault:
    return InMemoryKeyVault()


def worker_stage(store: KeyStore, vault: InMemoryKeyVault, reload_s: float) -> AcceptStage:
    """An accept stage wired as a worker wires it: it reads the key directory every `reload_s`."""
    return AcceptStage(
        registry=KeyRegistry(Database(f"sqlite:///{store.dir.parent}/registry.sqlite3")),
        vault=vault,
        hub_key=store.hub_encryption_key(),
        hub_key_id=store.hub_key_id(),
        linker=Linker.latest(store.linkage_keys()),
        linkage_keys=store.linkage_keys,
        key_reload_s=reload_s,
    )


@pytest.fixture
def stage(store: KeyStore, vault: InMemoryKeyVault) -> AcceptStage:
    return worker_stage(store, vault, reload_s=1e-6)  # every batch reads the key directory again


def accept_one(stage: AcceptStage, store: KeyStore, report: dict[str, Any]) -> dict[str, Any]:
    key, value = EnvelopeKit(store.dir.parent, epoch=False).wire(
        EnvelopeKit(store.dir.parent, epoch=False).envelope(report)
    )
    time.sleep(0.001)  # past the (zero) reload interval
    [verdict] = stage.process([Submission("submitted", 0, 0, key, value, int(time.time() * 1000))])
    assert verdict.accepted is not None, verdict.rejected
    WireCodec().encode("tiphub.AcceptedReport", verdict.accepted)  # valid against the latest schema
    return verdict.accepted


def person(name: str, dob: str, identifiers: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "role": "SUSPECTED_VICTIM",
        "name": name,
        "date_of_birth": dob,
        "sex": "F",
        "nationality": "KH",
        "identifiers": identifiers,
    }


PASSPORT = [{"kind": "PASSPORT", "value": "N01234567", "issuer": "KH"}]


def links(*records: dict[str, Any]) -> set[tuple[str, str, str]]:
    """The level-1 links the partitioned link stage makes from these reports' sightings, in order."""
    index = KeyIndex()
    made: list[Link] = []
    for record in records:
        for sighting in sightings_of(facts_from_accepted(record)):
            made += index.add(sighting)
    return {(link.a.split("#")[0], link.b.split("#")[0], link.basis) for link in made}


def test_reports_before_during_and_after_a_rotation_are_one_person_and_one_document(
    stage: AcceptStage, store: KeyStore
) -> None:
    before = accept_one(stage, store, make_report(subjects=[person("Sokha Chan", "2008-04-02", PASSPORT)]))
    assert before["linkage_key_version"] == 1 and before["linkage_bridges"] == []

    assert store.rotate_linkage_key() == 2
    during = accept_one(stage, store, make_report(subjects=[person("Chan Sokha", "2008-04-02", PASSPORT)]))
    assert during["linkage_key_version"] == 2
    assert during["subjects"][0]["identifiers"][0]["linkage_token"].startswith("lk2.")
    [bridge] = during["linkage_bridges"]
    # The bridge is the same passport under the earlier key: exactly the token the old report carries.
    assert bridge["version"] == 1
    assert bridge["subjects"][0]["identifier_tokens"] == [before["subjects"][0]["identifiers"][0]["linkage_token"]]
    assert bridge["registration_tokens"] == [before["organisations"][0]["registration_token"]]

    store.retire_linkage_key(1)
    after = accept_one(stage, store, make_report(subjects=[person("Sokha Chan", "2008-04-02", PASSPORT)]))
    assert after["linkage_key_version"] == 2 and after["linkage_bridges"] == []
    assert all(not t.startswith("lk1.") for t in facts_from_accepted(after).people[0].documents)

    # The link stage: old-new through the v1 bridge, new-newest under v2.
    ids = {r["report_id"]: name for r, name in ((before, "before"), (during, "during"), (after, "after"))}
    made = {(ids[a], ids[b], basis) for a, b, basis in links(before, during, after)}
    pairs = {frozenset((a, b)) for a, b, basis in made if basis == "document"}
    assert pairs == {frozenset(("before", "during")), frozenset(("during", "after"))}

    # The correlator: one person, and the passport one document entity named by the same token throughout.
    correlator = Correlator(PLAN)
    for record in (before, during, after):
        correlator.add(facts_from_accepted(record))
    occurrences = [f"{r['report_id']}#0" for r in (before, during, after)]
    assert len({correlator.entity_of[o] for o in occurrences}) == 1
    documents = {t for o in occurrences for t in correlator.occurrences[o].documents}
    assert documents == {before["subjects"][0]["identifiers"][0]["linkage_token"]}
    organisations = {t for r in (before, during, after) for t in correlator.reports[r["report_id"]].organisations}
    assert organisations == {before["organisations"][0]["registration_token"]}


def test_a_person_known_only_by_name_and_birth_date_links_across_the_rotation(
    stage: AcceptStage, store: KeyStore
) -> None:
    before = accept_one(stage, store, make_report(subjects=[person("Sokha Chan", "2008-04-02", [])]))
    store.rotate_linkage_key()
    during = accept_one(stage, store, make_report(subjects=[person("Sokha Chann", "2008-04-02", [])]))
    stranger = accept_one(stage, store, make_report(subjects=[person("Dara Pich", "2008-04-02", [])]))

    made = links(before, during, stranger)
    assert {(a, b) for a, b, _ in made} == {tuple(sorted((before["report_id"], during["report_id"])))}
    assert {basis for _, _, basis in made} == {"dob"}
    correlator = Correlator(PLAN)  # the single-process correlator finds the same link itself
    for record in (before, during, stranger):
        correlator.add(facts_from_accepted(record))
    entity = correlator.entity_of
    assert entity[f"{before['report_id']}#0"] == entity[f"{during['report_id']}#0"]
    assert entity[f"{stranger['report_id']}#0"] != entity[f"{before['report_id']}#0"]


def test_an_erasure_by_an_old_token_finds_the_reports_accepted_after_the_rotation(
    stage: AcceptStage, store: KeyStore, vault: InMemoryKeyVault
) -> None:
    before = accept_one(stage, store, make_report(subjects=[person("Sokha Chan", "2008-04-02", PASSPORT)]))
    store.rotate_linkage_key()
    during = accept_one(stage, store, make_report(subjects=[person("Sokha Chan", "2008-04-02", PASSPORT)]))
    old_token = before["subjects"][0]["identifiers"][0]["linkage_token"]
    new_token = during["subjects"][0]["identifiers"][0]["linkage_token"]
    assert vault.key_ids_for_token(old_token) == sorted(
        [before["subjects"][0]["subject_key_id"], during["subjects"][0]["subject_key_id"]]
    )
    assert vault.key_ids_for_token(new_token) == [during["subjects"][0]["subject_key_id"]]


def test_retiring_a_version_names_the_readable_reports_it_would_strand(stage: AcceptStage, store: KeyStore) -> None:
    before = accept_one(stage, store, make_report())
    store.rotate_linkage_key()
    during = accept_one(stage, store, make_report())
    live = store.linkage_keys()
    assert stranded_by_retiring([before, during], 1, live, lambda key_id: True) == [before["report_id"]]
    assert stranded_by_retiring([before, during], 1, live, lambda key_id: False) == []  # expired or erased
    with pytest.raises(ValueError, match="current"):
        store.retire_linkage_key(2)
    assert store.retire_linkage_key(1) is True
    assert store.linkage_keys().keys() == {2}
    assert oct(store.linkage_path(2).stat().st_mode & 0o777) == "0o600"


def test_a_stage_not_yet_reloaded_and_one_already_rotated_still_link(store: KeyStore, vault: InMemoryKeyVault) -> None:
    """Two workers pick a rotation up up to 30 s apart: reports of both still link."""
    stale = worker_stage(store, vault, reload_s=30.0)
    store.rotate_linkage_key()
    fresh = worker_stage(store, vault, reload_s=30.0)
    a = accept_one(stale, store, make_report(subjects=[person("Sokha Chan", "2008-04-02", PASSPORT)]))
    b = accept_one(fresh, store, make_report(subjects=[person("Sokha Chan", "2008-04-02", PASSPORT)]))
    assert (a["linkage_key_version"], b["linkage_key_version"]) == (1, 2)
    assert ("document" in {basis for _, _, basis in links(a, b)}) and ("document" in {b for *_, b in links(b, a)})


def test_a_new_encoding_is_adopted_by_rotation_and_the_bridge_links_people_seen_before_and_after(
    store: KeyStore, vault: InMemoryKeyVault
) -> None:
    """A hub whose key was made before encodings were versioned (a bare 32-byte file: encoding 1) keeps
    its values; the rotated key derives with encoding 2, and the bridge carries encoding 1 beside it."""
    path = store.linkage_path(1)
    path.write_bytes(path.read_bytes()[-32:])
    assert {v: k.encoding for v, k in store.linkage_keys().items()} == {1: 1}
    stage = worker_stage(store, vault, reload_s=1e-6)
    before = accept_one(stage, store, make_report(subjects=[person("Somchai Srisuk", "1999-04-02", [])]))
    assert store.rotate_linkage_key() == 2
    assert {v: k.encoding for v, k in store.linkage_keys().items()} == {1: 1, 2: 2}
    # During the overlap the passport form links to the old report through the encoding-1 bridge...
    during = accept_one(stage, store, make_report(subjects=[person("Somchai Srisuk", "1999-04-02", [])]))
    # ...and the Thai officer's writing links to it under encoding 2, which encoding 1 could not do.
    thai = accept_one(stage, store, make_report(subjects=[person("สมชาย ศรีสุข", "1999-04-02", [])]))
    assert {frozenset((a, b)) for a, b, _ in links(before, during, thai)} == {
        frozenset((before["report_id"], during["report_id"])),
        frozenset((during["report_id"], thai["report_id"])),
    }
    correlator = Correlator(PLAN)
    for record in (before, during, thai):
        correlator.add(facts_from_accepted(record))
    assert len({correlator.entity_of[f"{r['report_id']}#0"] for r in (before, during, thai)}) == 1


def test_a_linkage_key_carries_its_encoding_and_a_damaged_or_unknown_one_is_refused(store: KeyStore) -> None:
    path = store.linkage_path(1)
    secret = path.read_bytes()[-32:]
    assert path.read_bytes() == b"tiphub linkage key, encoding 2\n" + secret  # keys init makes encoding-2 keys
    assert store.linkage_keys()[1] == LinkageKey(secret, 2)
    # A copy of the file (a backup restored, a secret mounted) keeps its encoding: nothing beside it to lose.
    for damaged, reason in [
        (b"tiphub linkage key, encoding 9\n" + secret, r"encoding '9' is not a known one \(1, 2\)"),
        (b"tiphub linkage key, encoding 2\n" + secret[:31], "not a linkage key"),
        (secret + b"\n", "not a linkage key"),
        (b"", "not a linkage key"),
    ]:
        path.write_bytes(damaged)
        with pytest.raises(ValueError, match=rf"linkage-v1\.bin: {reason}"):
            store.linkage_keys()
    path.write_bytes(b"tiphub linkage key, encoding 2\n" + secret)
    store.rotate_linkage_key()
    store.retire_linkage_key(1)
    assert not path.exists() and set(store.linkage_keys()) == {2}


def test_a_key_cut_short_is_refused_not_read_as_a_legacy_key_and_a_development_builds_sidecar_is_honoured(
    store: KeyStore,
) -> None:
    path = store.linkage_path(1)
    secret = path.read_bytes()[-32:]
    # A write cut short at 32 bytes (the header, the newline, one byte of secret) is a damaged key, refused:
    # read as a 32-byte legacy key it would have derived every token anew, splitting everyone seen before.
    path.write_bytes(path.read_bytes()[:32])
    with pytest.raises(ValueError, match="not a linkage key"):
        store.linkage_keys()
    # A bare 32-byte key is a legacy key of encoding 1, unless a development build left its encoding beside it.
    path.write_bytes(secret)
    assert store.linkage_keys()[1] == LinkageKey(secret, 1)
    path.with_suffix(".encoding").write_text("2\n")
    assert store.linkage_keys()[1] == LinkageKey(secret, 2)
    path.with_suffix(".encoding").write_text("7\n")
    with pytest.raises(ValueError, match="not a known linkage encoding"):
        store.linkage_keys()
    path.with_suffix(".encoding").write_text("2\n")
    store.rotate_linkage_key()
    store.retire_linkage_key(1)
    assert not path.exists() and not path.with_suffix(".encoding").exists()


def test_a_key_file_is_written_whole_and_never_over_another(store: KeyStore) -> None:
    before = store.linkage_path(1).read_bytes()
    version = store.rotate_linkage_key()
    assert version == 2 and store.linkage_path(1).read_bytes() == before
    assert [p.name for p in store.linkage_path(1).parent.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(FileExistsError):
        store._new_linkage_key(2)  # an existing version is never replaced
    assert store.linkage_keys()[2].secret == store.linkage_path(2).read_bytes()[-32:]
