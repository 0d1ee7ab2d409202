"""The container: every adapter built once from settings, and two processes on one TIPHUB_HOME see
the same stores (what a worker writes, the gateway and the CLI read)."""

from __future__ import annotations

from pathlib import Path

from domain.ports import KeyRequest
from tiphub.container import Container
from tiphub.runtime import init_keys
from tiphub.settings import Settings


def test_each_adapter_is_built_once_and_two_containers_share_the_stores(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    init_keys(settings)
    worker, cli = Container(settings), Container(settings)
    assert worker.vault is worker.vault and worker.envelope_keys.vault is worker.vault

    created = worker.vault.get_or_create_many([KeyRequest("NZ-POLICE/r1/e/s0", "r1", ("token",))])
    assert cli.vault.get("NZ-POLICE/r1/e/s0") == created["NZ-POLICE/r1/e/s0"]
    assert cli.vault.key_ids_for_token("token") == ["NZ-POLICE/r1/e/s0"]
    assert {k.agency for k in cli.registry.all()} >= {"NZ-CUSTOMS", "NGO-SHAKTI"}

    token = worker.tokens.issue("analyst", "ana", agency="NZ-NIC")
    assert cli.tokens.verify(token).acts_for == "NZ-NIC"
    worker.close()
    cli.close()


def test_the_token_key_is_made_on_first_use(tmp_path: Path) -> None:
    hub = Container(Settings(home=tmp_path))
    assert not hub.keys.token_signing_path.exists()
    hub.tokens.issue("auditor", "aud", agency="NZ-NIC")
    assert hub.keys.token_signing_path.exists()
    hub.close()
