"""Canonical forms of identifiers and names, so that the same value always yields the same token."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

DOCUMENT_KINDS = frozenset({"PASSPORT", "NATIONAL_ID", "VISA"})
CONTACT_KINDS = frozenset({"PHONE", "EMAIL", "BANK_ACCOUNT", "SOCIAL_HANDLE"})
IDENTIFIER_KINDS = DOCUMENT_KINDS | CONTACT_KINDS | {"VEHICLE"}  # CONTRACT section 2
_ALNUM = re.compile(r"[^A-Z0-9]")
_PHONE_CHARS = re.compile(r"^\+?[0-9 ()./-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class IdentifierError(ValueError):
    """An identifier that cannot be put in canonical form. The message never holds the value."""


def normalise_identifier(kind: str, value: str, issuer: str | None, nationality: str | None) -> str:
    """The canonical form of an identifier value, used as the input of its linkage token.

    Documents: issuer + upper-case alphanumerics (an unknown issuer stays '??', so the same
    number from an unknown issuer links only to itself). Phones: E.164, read in the issuer's,
    then the nationality's numbering plan when written nationally. Email: lower-case.
    """
    if kind in DOCUMENT_KINDS or kind in ("BANK_ACCOUNT", "VEHICLE"):
        canonical = _ALNUM.sub("", value.upper())
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


def fold_name(name: str) -> list[str]:
    """Name tokens with accents, case and punctuation removed: 'Nguyễn Thị-Lan' -> ['nguyen', 'thi', 'lan']."""
    decomposed = unicodedata.normalize("NFKD", name)
    letters = "".join(c if c.isalpha() else " " for c in decomposed if not unicodedata.combining(c))
    return [token for token in letters.lower().split() if token]
