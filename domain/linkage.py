"""Pseudonymous linkage material: keyed tokens, a keyed name+DOB Bloom encoding, age facts.

Only the accept stage holds the linkage key. Everything it derives here is useless without
that key: a token cannot be reversed or recomputed from a guessed passport number by anyone
who reads the topics.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from base64 import urlsafe_b64encode
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from schemas.normalise import (
    CURRENT_ENCODING,
    ENCODINGS,
    LEGACY_ENCODING,
    fold_name_for,
    normalise_identifier,
)

__all__ = ["CURRENT_ENCODING", "ENCODINGS", "LEGACY_ENCODING", "LinkageKey", "Linker"]

ENCODING_BITS = 1024
ENCODING_HASHES = 20
# Name bigrams and date parts form a small alphabet: their keyed bit masks are cached per process.
# The cache holds no personal data (a bigram or a birth year alone names nobody).
_MAX_CACHED_FEATURES = 100_000
AGE_BANDS = ((0, 8), (9, 17), (18, 20), (21, 23), (24, 26), (27, 29), (30, 38), (39, 47), (48, 200))


def age_band(age: int) -> str:
    for low, high in AGE_BANDS:
        if low <= age <= high:
            return f"{low}-{high}" if high < 200 else f"{low}+"
    return "unknown"


@dataclass(frozen=True)
class LinkageKey:
    """One linkage key version's secret and the encoding it derives with (fixed when it is made)."""

    secret: bytes = field(repr=False)  # never in a log line or a traceback
    encoding: int = LEGACY_ENCODING


def _key(value: bytes | LinkageKey) -> LinkageKey:
    return value if isinstance(value, LinkageKey) else LinkageKey(value)


class Linker:
    """Derives linkage material with one version of the linkage key, in that version's encoding."""

    def __init__(self, key: bytes, version: int, encoding: int = LEGACY_ENCODING) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown linkage encoding {encoding}")
        self.version = version
        self.encoding = encoding
        self._fold = fold_name_for(encoding)
        self._fingerprint = hashlib.sha256(key).digest() + bytes([encoding])
        self._token_key = hmac.new(key, b"tiphub/linkage/token", hashlib.sha256).digest()
        self._clk_key = hmac.new(key, b"tiphub/linkage/clk", hashlib.sha256).digest()
        self._block_key = hmac.new(key, b"tiphub/linkage/block", hashlib.sha256).digest()
        self._feature_masks: dict[str, int] = {}

    @classmethod
    def of(cls, version: int, key: bytes | LinkageKey) -> Linker:
        found = _key(key)
        return cls(found.secret, version, found.encoding)

    @classmethod
    def latest(cls, keys: Mapping[int, bytes | LinkageKey]) -> Linker:
        version = max(keys)
        return cls.of(version, keys[version])

    @classmethod
    def live(
        cls, keys: Mapping[int, bytes | LinkageKey], reuse: tuple[Linker, ...] = ()
    ) -> tuple[Linker, tuple[Linker, ...]]:
        """(current, earlier): the latest version, and every earlier version still live (not retired).

        During a rotation's overlap the accept stage derives every report's link material with each
        of them, so reports accepted before the rotation, which carry only an earlier version, still
        link with new ones. `reuse` keeps loaded linkers (and their mask caches) whose key is unchanged.
        """
        known = {(linker.version, linker._fingerprint): linker for linker in reuse}

        def linker(version: int) -> Linker:
            key = _key(keys[version])
            found = known.get((version, hashlib.sha256(key.secret).digest() + bytes([key.encoding])))
            return found or cls.of(version, key)

        versions = sorted(keys, reverse=True)
        return linker(versions[0]), tuple(linker(v) for v in versions[1:])

    def token(self, domain: str, canonical: str) -> str:
        """`lk<version>.<base64url of 128 bits>`: domain-separated by identifier kind."""
        digest = hmac.digest(self._token_key, domain.encode() + b"\x00" + canonical.encode(), "sha256")
        return f"lk{self.version}.{urlsafe_b64encode(digest[:16]).rstrip(b'=').decode()}"

    def identifier_token(self, kind: str, value: str, issuer: str | None, nationality: str | None) -> str:
        """The token of an identifier as written, in this version's canonical form."""
        return self.token(kind, normalise_identifier(kind, value, issuer, nationality, self.encoding))

    def fold(self, name: str) -> list[str]:
        """Name tokens in this version's name fold."""
        return self._fold(name)

    def name_dob_encoding(self, name: str | None, dob: str | None) -> bytes | None:
        """A 1024-bit keyed Bloom filter of name bigrams and date-of-birth parts (clkhash style).

        Spelling variants share most bigrams, so their encodings stay close in Dice similarity;
        token order does not matter. Without the key the filter cannot be attacked by
        encoding guessed names.
        """
        features: list[str] = []
        for part in self._fold(name or ""):
            padded = f"_{part}_"
            features.extend(f"n:{padded[i : i + 2]}" for i in range(len(padded) - 1))
        if dob:
            pieces = dob.split("-")
            features.extend(f"d{i}:{p}" for i, p in enumerate(pieces))
        if not features:
            return None
        bits = 0
        for feature in features:
            bits |= self._feature_mask(feature)
        # Bit i of the filter is bit (i % 8) of byte (i // 8): little-endian order of the integer.
        return bits.to_bytes(ENCODING_BITS // 8, "little")

    def _feature_mask(self, feature: str) -> int:
        """The filter bits one feature sets (double hashing over one keyed digest), as an integer."""
        mask = self._feature_masks.get(feature)
        if mask is None:
            digest = hmac.digest(self._clk_key, feature.encode(), "sha256")
            first, second = struct.unpack_from(">II", digest)
            mask = 0
            for k in range(ENCODING_HASHES):
                mask |= 1 << ((first + k * (second | 1)) % ENCODING_BITS)
            if len(self._feature_masks) < _MAX_CACHED_FEATURES:
                self._feature_masks[feature] = mask
        return mask

    def blocking_keys(self, name: str | None, dob: str | None) -> list[str]:
        """Keyed candidate keys: `dob:` exact date of birth, `ny:` name-token skeleton + birth year, and
        `nd:` the whole folded name with a full date of birth one typing error away (`near_dobs`)."""
        keys = []
        tokens = sorted(self._fold(name or ""))
        year = dob[:4] if dob else None
        if dob and len(dob) == 10:
            keys.append("dob:" + self.token("block:dob", dob))
            if len(tokens) >= 2:
                # The whole name as folded, not its skeletons: two given names that differ by a vowel (Lan,
                # Linh, Loan) are two people, and a date one slip apart is no reason to think otherwise.
                whole = " ".join(tokens)
                keys += ["nd:" + self.token("block:name-dob-near", f"{whole}|{near}") for near in near_dobs(dob)]
        if year:
            for token in tokens:
                keys.append("ny:" + self.token("block:name-year", f"{_skeleton(token)}|{year}"))
        return sorted(set(keys))


def near_dobs(dob: str) -> list[str]:
    """The neighbourhood of a full date of birth: two dates one typing error apart share one of these.

    - a digit mistyped: the date with one of its last five digits masked (`1999-04-02` and `1999-04-03`
      share `1999040*`); the year's first three digits are not masked (a 1909 or an 1899 written for 1999
      is ten or a hundred years off: a date the reader would question, not a slip to link through);
    - day and month swapped (`1999-04-02` and `1999-02-04`): the year with the two sorted.
    Two transposed digits within the day (`12`/`21`) are not covered."""
    digits = dob.replace("-", "")
    keys = [f"{digits[:i]}*{digits[i + 1 :]}" for i in range(3, 8)]
    month, day = digits[4:6], digits[6:]
    if month != day and int(day) <= 12:
        keys.append(f"{digits[:4]}|{min(month, day)}{max(month, day)}|swap")
    return keys


def _skeleton(token: str) -> str:
    """First letter and consonant skeleton: 'mohammed' and 'muhammad' both give 'mhmd'."""
    head, rest = token[0], token[1:]
    consonants = [c for c in rest if c not in "aeiouyhw"]
    collapsed = [c for i, c in enumerate(consonants) if i == 0 or c != consonants[i - 1]]
    return head + "".join(collapsed)[:5]


def age_facts(dob: str | None, observed_at: datetime) -> tuple[bool | None, str | None]:
    """(minor at observation, age band). A partial date of birth counts as a minor if any
    day it allows would make the person under 18: in doubt, treat as a child."""
    if not dob:
        return None, None
    parts = [int(p) for p in dob.split("-")]
    year = parts[0]
    month_hi = parts[1] if len(parts) > 1 else 12
    day_hi = parts[2] if len(parts) > 2 else _month_days(year, month_hi)
    latest_birth = date(year, month_hi, day_hi)
    on = observed_at.date()
    youngest_age = on.year - latest_birth.year - ((on.month, on.day) < (latest_birth.month, latest_birth.day))
    minor = youngest_age < 18
    return minor, age_band(max(youngest_age, 0))


def _month_days(year: int, month: int) -> int:
    return 31 if month == 12 else (date(year, month + 1, 1) - date(year, month, 1)).days


def stranded_by_retiring(
    accepted: Iterable[dict[str, Any]], version: int, live: Iterable[int], readable: Callable[[str], bool]
) -> list[str]:
    """Report ids that retiring linkage key `version` would strand: still readable (not erased or
    expired), and carrying link material of no other live version. New reports could then no
    longer link with them directly (only through a report bridged during the overlap)."""
    remaining = set(live) - {version}
    stranded = []
    for record in accepted:
        carried = {record["linkage_key_version"]} | {b["version"] for b in record.get("linkage_bridges") or []}
        if version in carried and not carried & remaining and readable(record["report_key_id"]):
            stranded.append(record["report_id"])
    return sorted(set(stranded))
