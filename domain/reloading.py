"""Key material read from disk and read again while the process runs, so that a rotation or a
retirement takes effect without a restart (docs/operations.md, Rotation)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Reloaded(Generic[T]):
    """The value `load` returns, read again once it is `every_s` old, or when asked to."""

    def __init__(self, load: Callable[[], T], every_s: float) -> None:
        self._load = load
        self.every_s = every_s
        self.value = load()
        self._loaded_at = time.monotonic()

    @classmethod
    def fixed(cls, value: T) -> Reloaded[T]:
        """A value that never changes (a key given as such, not as a loader)."""
        return cls(lambda: value, float("inf"))

    def current(self) -> T:
        if time.monotonic() - self._loaded_at > self.every_s:
            self.reload()
        return self.value

    def reload(self, unless_younger_than_s: float = 0.0) -> bool:
        """Read the value again now, unless it was read less than `unless_younger_than_s` ago (a flood
        of unknown key ids must not turn into a flood of reads). Returns whether it was read."""
        if self.every_s == float("inf") or time.monotonic() - self._loaded_at < unless_younger_than_s:
            return False
        self.value = self._load()
        self._loaded_at = time.monotonic()
        return True
