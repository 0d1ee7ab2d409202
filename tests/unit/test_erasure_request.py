"""Whom one `tiphub erase` request reaches (streams/erasure.keys_named, keys_to_erase): the person's own
records, found again after they were erased; the records correlation links to them only with
--follow-links, left for a review otherwise; nothing erased twice."""

from __future__ import annotations

from typing import Any

from adapters.memory.vault import InMemoryKeyVault
from domain.ports import KeyRequest
from streams.erasure import keys_named, keys_to_erase

TOKEN, OTHER = "lk1.sokha", "lk1.dara"


def vault_with(*requests: KeyRequest) -> InMemoryKeyVault:
    vault = InMemoryKeyVault()
    vault.get_or_create_many(requests)
    return vault


def fact(key_id: str, *tokens: str) -> dict[str, Any]:
    return {"subject_key_id": key_id, "tokens": list(tokens)}


def test_the_request_names_every_key_indexed_under_any_of_its_tokens() -> None:
    vault = vault_with(
        KeyRequest("r1/s0", "r1", (TOKEN,)),
        KeyRequest("r2/s0", "r2", ("lk2.sokha",)),  # the same person under another linkage key version
        KeyRequest("r3/s0", "r3", (OTHER,)),
    )
    assert keys_named([TOKEN, "lk2.sokha"], vault, {}) == ["r1/s0", "r2/s0"]
    assert keys_named(["lk1.nobody"], vault, {}) == []


def test_a_person_erased_before_is_found_again_by_the_tokens_their_erasure_facts_list() -> None:
    vault = vault_with(KeyRequest("r1/s0", "r1", (TOKEN,)))
    vault.delete(["r1/s0"])  # erased: the vault no longer indexes the key under the token
    assert keys_named([TOKEN], vault, {"r1/s0": fact("r1/s0", TOKEN)}) == ["r1/s0"]
    assert keys_named([OTHER], vault, {"r1/s0": fact("r1/s0", TOKEN)}) == []


def test_linked_records_are_left_for_review_unless_links_are_followed() -> None:
    named, linked = ["r1/s0"], ["r4/s0", "r5/s1"]
    assert keys_to_erase(named, linked, set(), follow_links=False) == (["r1/s0"], ["r4/s0", "r5/s1"])
    assert keys_to_erase(named, linked, set(), follow_links=True) == (["r1/s0", "r4/s0", "r5/s1"], [])


def test_nothing_erased_before_is_erased_again_or_left_for_review() -> None:
    named, linked, erased = ["r1/s0", "r2/s0"], ["r4/s0", "r5/s1"], {"r1/s0", "r4/s0"}
    assert keys_to_erase(named, linked, erased, follow_links=False) == (["r2/s0"], ["r5/s1"])
    assert keys_to_erase(named, linked, erased, follow_links=True) == (["r2/s0", "r5/s1"], [])
