"""Canonical forms of identifiers and names, so that the same value always yields the same token."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import phonenumbers

from schemas.romanise import check_libraries, fold_name_v2

DOCUMENT_KINDS = frozenset({"PASSPORT", "NATIONAL_ID", "VISA"})
CONTACT_KINDS = frozenset({"PHONE", "EMAIL", "BANK_ACCOUNT", "SOCIAL_HANDLE"})
IDENTIFIER_KINDS = DOCUMENT_KINDS | CONTACT_KINDS | {"VEHICLE"}  # CONTRACT section 2
_ALNUM = re.compile(r"[^A-Z0-9]")
_PHONE_CHARS = re.compile(r"^\+?[0-9 ()./-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# Encodings: how names and identifiers are put in canonical form before they are keyed. Each linkage key
# version derives with one of them, fixed when the key is made, so the values a key derives never change;
# a new encoding is adopted by rotating the linkage key, whose bridge links people seen before and after
# (docs/correlation.md, "Encodings").
#   1: names folded by accents and case only; documents as written (upper-case alphanumerics).
#   2: names romanised from their script and folded to sound keys (schemas/romanise.py); documents with
#      OCR confusions folded and an MRZ check digit dropped.
LEGACY_ENCODING = 1
CURRENT_ENCODING = 2
ENCODINGS = frozenset({1, 2})
# Letters a scan or a clerk confuses with digits, folded in document numbers (encoding 2). One letter per
# digit, so that no two letters become one (D, Q and L, G also pass for 0, 1, 6 but would merge with O, I
# and the series letters that use them).
_OCR_DIGITS = str.maketrans({"O": "0", "I": "1", "Z": "2", "S": "5", "B": "8"})
_MRZ_WEIGHTS = (7, 3, 1)


class IdentifierError(ValueError):
    """An identifier that cannot be put in canonical form. The message never holds the value."""


def normalise_identifier(
    kind: str, value: str, issuer: str | None, nationality: str | None, encoding: int = LEGACY_ENCODING
) -> str:
    """The canonical form of an identifier value, used as the input of its linkage token.

    Documents: issuer + upper-case alphanumerics (an unknown issuer stays '??', so the same
    number from an unknown issuer links only to itself); from encoding 2 with OCR confusions
    folded (`document_number`). Phones: E.164, read in the issuer's, then the nationality's
    numbering plan when written nationally. Email: lower-case.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown linkage encoding {encoding}")
    if kind in DOCUMENT_KINDS or kind in ("BANK_ACCOUNT", "VEHICLE"):
        canonical = _ALNUM.sub("", value.upper())
        if kind in DOCUMENT_KINDS and encoding == 2:
            canonical = document_number(value)
        if len(canonical) < 3:
            raise IdentifierError(f"a {kind} needs at least 3 letters or digits")
        return f"{issuer or '??'}:{canonical}" if kind != "BANK_ACCOUNT" else canonical
    if kind == "PHONE":
        region = issuer or nationality
        text = value.strip()
        if not _PHONE_CHARS.match(text):
            # phonenumbers reads letters as keypad digits (vanity numbers); in intelligence
            # records a letter means the value is not a phone number at all.
            raise IdentifierError("a phone number may hold only digits, spaces, + - ( ) and .")
        if text.startswith("00"):
            text = "+" + text[2:]
        try:
            number = phonenumbers.parse(text, region if not text.startswith("+") else None)
        except phonenumbers.NumberParseException:
            raise IdentifierError(
                "not a phone number (give it in international form, +<country code><number>)"
            ) from None
        if not phonenumbers.is_possible_number(number):
            raise IdentifierError("not a possible phone number for its country")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if kind == "EMAIL":
        canonical = value.strip().lower()
        if not _EMAIL.match(canonical):
            raise IdentifierError("not an email address")
        return canonical
    if kind == "SOCIAL_HANDLE":
        canonical = value.strip().lower().lstrip("@")
        if not canonical:
            raise IdentifierError("empty handle")
        return canonical
    raise IdentifierError(f"unknown identifier kind {kind}")


def document_number(value: str) -> str:
    """A document number as encoding 2 keys it: upper-case alphanumerics with the letters a scan or a
    clerk confuses with digits read as those digits (O -> 0, I -> 1, Z -> 2, S -> 5, B -> 8), and, when
    it was copied from the machine-readable zone with its filler and check digit (`N1234567<7`), the
    check digit dropped if it checks. Two numbers that differ only by such a letter and its digit are one
    number here (a series letter S and a leading 5 too): the price of reading scanned and hand-typed
    numbers alike. No two letters become one."""
    text = value.upper().strip()
    mrz = re.fullmatch(r"([A-Z0-9]+)<+([0-9])", text)
    if mrz and _mrz_check_digit(mrz.group(1)) == int(mrz.group(2)):
        text = mrz.group(1)
    return _ALNUM.sub("", text).translate(_OCR_DIGITS)


def _mrz_check_digit(field: str) -> int:
    """ICAO 9303 check digit: digits as themselves, A-Z as 10-35, '<' as 0, weights 7 3 1."""
    total = 0
    for i, char in enumerate(field):
        value = int(char) if char.isdigit() else ord(char) - 55 if char.isalpha() else 0
        total += value * _MRZ_WEIGHTS[i % 3]
    return total % 10


def fold_name_for(encoding: int) -> Callable[[str], list[str]]:
    """The name fold of an encoding. Encoding 2's libraries are checked once, before its first use."""
    if encoding == 1:
        return fold_name
    if encoding == 2:
        check_libraries()
        return fold_name_v2
    raise ValueError(f"unknown linkage encoding {encoding}")


def fold_name(name: str) -> list[str]:
    """Name tokens with accents, case and punctuation removed: 'Nguyễn Thị-Lan' -> ['nguyen', 'thi', 'lan']."""
    decomposed = unicodedata.normalize("NFKD", name)
    letters = "".join(c if c.isalpha() else " " for c in decomposed if not unicodedata.combining(c))
    return [token for token in letters.lower().split() if token]
