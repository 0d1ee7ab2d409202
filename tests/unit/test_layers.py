"""The layering check (make lint) on this repository, and on small trees that break it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def layers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", REPO / "scripts" / "check_layers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module
    spec.loader.exec_module(module)
    return module


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in ("schemas", "domain", "policies", "streams", "producers", "adapters", "gateway", "tiphub"):
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


def test_this_repository_holds_its_layering(layers: ModuleType) -> None:
    assert layers.check(REPO) == []


def test_an_upward_import_is_named_with_its_file_and_line(layers: ModuleType, tmp_path: Path) -> None:
    root = tree(tmp_path, {"domain/rules.py": "import json\n\nfrom gateway.app import thing\n"})
    [problem] = [p for p in layers.check(root) if "KNOWN" not in p]
    assert problem == "domain/rules.py:3: domain may not import gateway (gateway.app)"


def test_a_driver_outside_its_adapter_and_io_in_the_domain_are_refused(layers: ModuleType, tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "gateway/store.py": "import sqlite3\n",
            "adapters/sql/__init__.py": "",
            "adapters/sql/db.py": "import sqlite3\n",
            "domain/net.py": "import socket\n",
            "domain/files.py": "def read(path):\n    return open(path).read()\n",
        },
    )
    problems = [p for p in layers.check(root) if "KNOWN" not in p]
    assert any(p.startswith("gateway/store.py:1: gateway.store may not import sqlite3") for p in problems)
    assert "domain/net.py:1: the domain does no I/O, yet imports socket" in problems
    assert "domain/files.py:2: the domain does no I/O, yet calls open" in problems
    assert not any("adapters/sql/db.py" in p for p in problems)


def test_an_import_the_statements_do_not_show_is_refused(layers: ModuleType, tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "domain/sneaky.py": "import importlib\n\nclient = importlib.import_module('aiokafka')\n",
            "policies/sly.py": "app = __import__('gateway.app')\n",
        },
    )
    problems = [p for p in layers.check(root) if "KNOWN" not in p]
    assert "domain/sneaky.py:3: domain.sneaky calls import_module, an import the check cannot see" in problems
    assert "policies/sly.py:1: policies.sly calls __import__, an import the check cannot see" in problems


def test_an_import_cycle_is_found_even_through_a_type_only_import(layers: ModuleType, tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "domain/a.py": "from domain.b import B\n",
            "domain/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from domain.a import A\n",
        },
    )
    assert "import cycle: domain.a -> domain.b -> domain.a" in layers.check(root)


def test_a_known_breach_that_is_gone_must_leave_the_list(
    layers: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layers, "KNOWN", {("streams.feeds", "aiokafka"), ("streams.old", "aiokafka")})
    root = tree(tmp_path, {"streams/feeds.py": "import aiokafka\n"})
    assert layers.check(root) == ["KNOWN entry ('streams.old', 'aiokafka') no longer breaches: delete it"]


def test_a_known_breach_lets_in_that_module_only(
    layers: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layers, "KNOWN", {("streams.ops", "adapters.kafka.feeds")})
    root = tree(
        tmp_path,
        {
            "adapters/kafka/feeds.py": "",
            "adapters/sql/vault.py": "",
            "streams/ops.py": "import adapters.kafka.feeds\nimport adapters.sql.vault\n",
        },
    )
    assert layers.check(root) == ["streams/ops.py:2: streams may not import adapters (adapters.sql.vault)"]
