"""Agreements from YAML, checked field by field; every error names the file, the line and the field."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from policies.model import FIELDS, TLP_ORDER, Agreement, FieldRule, LegalBasis, OriginatorAgreement
from schemas.registry import AVRO_DIR

CODE = re.compile(r"^[A-Z]{2,4}-[A-Z0-9-]+$")
COUNTRY = re.compile(r"^[A-Z]{2}$")
AGREEMENTS_DIR = Path(__file__).with_name("agreements")


class AgreementError(ValueError):
    def __init__(self, source: str, line: int | None, field: str, message: str) -> None:
        self.source, self.line, self.field = source, line, field
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {field}: {message}")


def _enum(name: str) -> list[str]:
    return list(json.loads((AVRO_DIR / f"tiphub.{name}.avsc").read_text())["symbols"])


class _Reader:
    """Walks a composed YAML node tree, turning each mistake into an AgreementError."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node | None, field: str, message: str) -> AgreementError:
        line = node.start_mark.line + 1 if node is not None else None
        return AgreementError(self.source, line, field, message)

    def mapping(self, node: yaml.Node, field: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, field, "expected a mapping of keys to values")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in out:
                raise self.fail(key_node, f"{field}.{key}" if field else key, "appears twice")
            out[key] = (key_node, value_node)
        return out

    def scalar(self, node: yaml.Node, field: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.value == "":
            raise self.fail(node, field, "expected a single value")
        return str(node.value)

    def text(self, node: yaml.Node, field: str, pattern: re.Pattern[str] | None = None, hint: str = "") -> str:
        value = self.scalar(node, field)
        if pattern is not None and not pattern.match(value):
            raise self.fail(node, field, f"{value!r} is not {hint}")
        return value

    def one_of(self, node: yaml.Node, field: str, allowed: list[str]) -> str:
        value = self.scalar(node, field)
        if value not in allowed:
            raise self.fail(node, field, f"{value!r} is not one of {', '.join(allowed)}")
        return value

    def integer(self, node: yaml.Node, field: str, minimum: int) -> int:
        value = self.scalar(node, field)
        if not re.fullmatch(r"\d+", value) or int(value) < minimum:
            raise self.fail(node, field, f"{value!r} is not a whole number of at least {minimum}")
        return int(value)

    def boolean(self, node: yaml.Node, field: str) -> bool:
        value = self.scalar(node, field).lower()
        if value not in ("true", "false"):
            raise self.fail(node, field, "expected true or false")
        return value == "true"

    def day(self, node: yaml.Node, field: str) -> date:
        value = self.scalar(node, field)
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise self.fail(node, field, f"{value!r} is not a date (YYYY-MM-DD)") from None

    def sequence(self, node: yaml.Node, field: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, field, "expected a list")
        return list(node.value)

    def symbols_or_all(self, node: yaml.Node, field: str, allowed: list[str]) -> frozenset[str] | None:
        if isinstance(node, yaml.ScalarNode) and node.value == "all":
            return None
        items = self.sequence(node, field)
        if not items:
            raise self.fail(node, field, "an empty list shares nothing: remove the agreement instead, or say 'all'")
        return frozenset(self.one_of(item, f"{field}[{i}]", allowed) for i, item in enumerate(items))

    def legal_basis(self, node: yaml.Node) -> tuple[LegalBasis, ...]:
        items = self.sequence(node, "legal_basis")
        if not items:
            raise self.fail(node, "legal_basis", "at least one instrument is required")
        out = []
        for i, item in enumerate(items):
            entry = self.mapping(item, f"legal_basis[{i}]")
            self.only(entry, {"instrument", "clause"}, f"legal_basis[{i}]", item)
            out.append(
                LegalBasis(
                    self.scalar(
                        self.need(entry, "instrument", f"legal_basis[{i}]", item), f"legal_basis[{i}].instrument"
                    ),
                    self.scalar(self.need(entry, "clause", f"legal_basis[{i}]", item), f"legal_basis[{i}].clause"),
                )
            )
        return tuple(out)

    def need(
        self, entries: dict[str, tuple[yaml.Node, yaml.Node]], key: str, parent: str, node: yaml.Node
    ) -> yaml.Node:
        if key not in entries:
            raise self.fail(node, f"{parent}.{key}" if parent else key, "is required")
        return entries[key][1]

    def only(
        self, entries: dict[str, tuple[yaml.Node, yaml.Node]], allowed: set[str], parent: str, node: yaml.Node
    ) -> None:
        for key, (key_node, _) in entries.items():
            if key not in allowed:
                raise self.fail(
                    key_node,
                    f"{parent}.{key}" if parent else key,
                    f"is not a field of an agreement (known: {', '.join(sorted(allowed))})",
                )


RECIPIENT_KEYS = {
    "recipient",
    "kind",
    "country",
    "version",
    "title",
    "legal_basis",
    "valid_from",
    "valid_until",
    "purposes",
    "indicator_types",
    "tlp_ceiling",
    "fields",
    "victim_protection",
    "onward_sharing",
    "retention_days",
}
ORIGINATOR_KEYS = {
    "originator",
    "version",
    "title",
    "legal_basis",
    "valid_from",
    "valid_until",
    "foreign_release",
    "pre_authorised_release",
}


def _plain(node: yaml.Node) -> Any:
    """The node as plain data (for the content hash)."""
    if isinstance(node, yaml.MappingNode):
        return {k.value: _plain(v) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v) for v in node.value]
    return node.value


def _compose(text: str, source: str) -> yaml.Node:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise AgreementError(
            source, mark.line + 1 if mark else None, "", f"not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    if node is None:
        raise AgreementError(source, None, "", "the file is empty")
    return node


def parse_recipient(text: str, source: str = "<agreement>") -> Agreement:
    node = _compose(text, source)
    r = _Reader(source)
    entries = r.mapping(node, "")
    r.only(entries, RECIPIENT_KEYS, "", node)
    get: Callable[[str], yaml.Node] = lambda key: r.need(entries, key, "", node)  # noqa: E731
    kind = r.one_of(get("kind"), "kind", ["domestic", "foreign"])
    victim_protection = r.one_of(get("victim_protection"), "victim_protection", ["strict", "domestic"])
    if kind == "foreign" and victim_protection != "strict":
        raise r.fail(
            get("victim_protection"),
            "victim_protection",
            "must be 'strict' for a foreign recipient: victims' identities never leave the country",
        )
    valid_from, valid_until = r.day(get("valid_from"), "valid_from"), r.day(get("valid_until"), "valid_until")
    if valid_until < valid_from:
        raise r.fail(get("valid_until"), "valid_until", "is before valid_from")
    field_entries = r.mapping(get("fields"), "fields")
    rules: dict[str, FieldRule] = {}
    for path, (key_node, value_node) in field_entries.items():
        if path not in FIELDS:
            raise r.fail(key_node, f"fields.{path}", f"is not a field a view can hold (known: {', '.join(FIELDS)})")
        allowed, _ = FIELDS[path]
        if isinstance(value_node, yaml.MappingNode):
            spec = r.mapping(value_node, f"fields.{path}")
            r.only(spec, {"rule", "clause"}, f"fields.{path}", value_node)
            rule = r.one_of(r.need(spec, "rule", f"fields.{path}", value_node), f"fields.{path}.rule", list(allowed))
            clause = r.scalar(r.need(spec, "clause", f"fields.{path}", value_node), f"fields.{path}.clause")
        else:
            rule = r.one_of(value_node, f"fields.{path}", list(allowed))
            clause = f"fields.{path}"
        rules[path] = FieldRule(rule, clause)  # type: ignore[arg-type]
    return Agreement(
        recipient=r.text(get("recipient"), "recipient", CODE, "a recipient code ([A-Z]{2,4}-[A-Z0-9-]+)"),
        kind=kind,  # type: ignore[arg-type]
        country=r.text(get("country"), "country", COUNTRY, "an ISO 3166-1 alpha-2 code"),
        version=r.integer(get("version"), "version", 1),
        title=r.scalar(get("title"), "title"),
        legal_basis=r.legal_basis(get("legal_basis")),
        valid_from=valid_from,
        valid_until=valid_until,
        purposes=r.symbols_or_all(get("purposes"), "purposes", _enum("Purpose")),
        indicator_types=r.symbols_or_all(get("indicator_types"), "indicator_types", _enum("IndicatorType")),
        tlp_ceiling=r.one_of(get("tlp_ceiling"), "tlp_ceiling", [t for t in TLP_ORDER if t != "RED"]),
        fields=rules,
        onward_sharing=r.boolean(get("onward_sharing"), "onward_sharing"),
        retention_days=r.integer(get("retention_days"), "retention_days", 1),
        content=_plain(node),
        source=source,
    )


def parse_originator(text: str, source: str = "<agreement>") -> OriginatorAgreement:
    node = _compose(text, source)
    r = _Reader(source)
    entries = r.mapping(node, "")
    r.only(entries, ORIGINATOR_KEYS, "", node)
    get: Callable[[str], yaml.Node] = lambda key: r.need(entries, key, "", node)  # noqa: E731

    def codes(key: str) -> frozenset[str]:
        return frozenset(
            r.text(item, f"{key}[{i}]", CODE, "a partner code") for i, item in enumerate(r.sequence(get(key), key))
        )

    valid_from, valid_until = r.day(get("valid_from"), "valid_from"), r.day(get("valid_until"), "valid_until")
    if valid_until < valid_from:
        raise r.fail(get("valid_until"), "valid_until", "is before valid_from")
    release, pre_authorised = codes("foreign_release"), codes("pre_authorised_release")
    if not pre_authorised <= release:
        raise r.fail(
            get("pre_authorised_release"),
            "pre_authorised_release",
            f"lists {', '.join(sorted(pre_authorised - release))}, not in foreign_release",
        )
    return OriginatorAgreement(
        originator=r.text(get("originator"), "originator", CODE, "an agency code"),
        version=r.integer(get("version"), "version", 1),
        title=r.scalar(get("title"), "title"),
        legal_basis=r.legal_basis(get("legal_basis")),
        valid_from=valid_from,
        valid_until=valid_until,
        foreign_release=release,
        pre_authorised_release=pre_authorised,
        content=_plain(node),
        source=source,
    )


def load_file(path: Path) -> Agreement | OriginatorAgreement:
    text = path.read_text(encoding="utf-8")
    if path.parent.name == "originators":
        return parse_originator(text, str(path))
    agreement = parse_recipient(text, str(path))
    if path.stem != agreement.recipient:
        raise AgreementError(str(path), None, "recipient", f"the file must be named {agreement.recipient}.yaml")
    return agreement


def load_directory(directory: Path = AGREEMENTS_DIR) -> list[Agreement | OriginatorAgreement]:
    """Every agreement under directory/recipients and directory/originators."""
    found = [load_file(p) for sub in ("recipients", "originators") for p in sorted((directory / sub).glob("*.yaml"))]
    if not found:
        raise AgreementError(str(directory), None, "", "no agreements found (expected recipients/*.yaml)")
    return found


def foreign_partners(directory: Path | None = None) -> set[str]:
    """The recipients abroad (partners such as the HSUs) that any agreement in `directory` names."""
    return {
        a.recipient
        for a in load_directory(directory or AGREEMENTS_DIR)
        if isinstance(a, Agreement) and a.kind == "foreign"
    }
