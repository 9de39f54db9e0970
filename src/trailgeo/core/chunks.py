"""Cutting an ordered list into runs bounded in count and in size (SQS messages and requests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def bounded_runs(
    items: Iterable[T], size_of: Callable[[T], int], *, max_count: int, max_size: int, base: int = 0
) -> list[list[T]]:
    """``items`` in order, in runs of at most ``max_count`` whose sizes, plus ``base`` (a run's own
    overhead), add up to at most ``max_size``. An item too large on its own still gets a run: callers
    that cannot send one check item sizes themselves."""
    runs: list[list[T]] = []
    current: list[T] = []
    size = base
    for item in items:
        length = size_of(item)
        if current and (len(current) == max_count or size + length > max_size):
            runs.append(current)
            current, size = [], base
        current.append(item)
        size += length
    if current:
        runs.append(current)
    return runs
