"""The legal definition of trafficking as element groups: act + means + purpose (child: act + purpose)."""

from __future__ import annotations

from collections.abc import Iterable

GROUPS = ("ACT", "MEANS", "PURPOSE")


def groups_covered(elements: Iterable[str]) -> set[str]:
    return {element.split("_", 1)[0] for element in elements} & set(GROUPS)


def covers_requirement(elements: Iterable[str], *, minor: bool) -> bool:
    """Whether `elements` make out the offence: for a child, 'means' is not required (ACTIP art. 2)."""
    needed = {"ACT", "PURPOSE"} if minor else set(GROUPS)
    return needed <= groups_covered(elements)
