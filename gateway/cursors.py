"""Opaque, authenticated cursors: a caller learns nothing from one and can use only its own.

Inside a cursor are positions (a place in a scope's feed, or one offset per partition of a topic),
as fixed-width integers, sealed with AES-256-GCM under the gateway's cursor key. The associated
data binds it to the feed and to the caller's agency or partner, so a cursor is refused anywhere
else, a forged or altered one is refused, and its length is the same for every caller and every
position: a `next` cursor cannot tell how many records another agency's reports took up.
"""

from __future__ import annotations

import base64
import binascii
import struct

from domain import crypto

_WIDTH = 8  # bytes per position


class CursorError(ValueError):
    pass


class CursorSealer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @staticmethod
    def _aad(feed: str, scope: str, count: int) -> bytes:
        return f"tiphub/cursor/v1|{feed}|{scope}|{count}".encode()

    def seal(self, feed: str, scope: str, positions: list[int]) -> str:
        plain = b"".join(struct.pack(">Q", p) for p in positions)
        blob = crypto.seal(self._key, plain, self._aad(feed, scope, len(positions)))
        return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()

    def open(self, feed: str, scope: str, text: str | None, count: int) -> list[int]:
        """The positions of a cursor issued for this feed and scope; all zeros for none."""
        if not text:
            return [0] * count
        try:
            blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            plain = crypto.unseal(self._key, blob, self._aad(feed, scope, count))
        except (ValueError, binascii.Error, crypto.DecryptionError):
            raise CursorError("not a cursor this gateway issued to you for this feed") from None
        if len(plain) != count * _WIDTH:
            raise CursorError("not a cursor this gateway issued to you for this feed")
        return [struct.unpack(">Q", plain[i : i + _WIDTH])[0] for i in range(0, len(plain), _WIDTH)]
