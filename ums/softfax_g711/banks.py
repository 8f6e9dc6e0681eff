"""Stepping only the first rows of a receiver bank.

What it does
------------
A bank of ``n`` receivers costs mostly per row once ``n`` is more than a handful (every state array has
a row per channel), so a bank whose upper rows are not in use should not step them.
:func:`first_rows` narrows a bank to its first ``k`` rows for the length of a ``with`` block: inside
it the bank is a bank of ``k`` channels, and the other rows keep their state untouched, exactly as
receivers that are not fed.

How it works
------------
Every ``numpy`` array attribute of the bank is a per-row state with its rows on axis 0 (on axis 1 for
the names in the class attribute ``_BANK_ROW_AXIS1``), unless it is named in ``_BANK_SHARED``; so is
every list named in ``_BANK_ROW_LISTS``.  An attribute that is itself a bank (its class has
``_BANK_SHARED``) is narrowed with it.  On entry each array is replaced by a view of its first ``k``
rows (a list by a copy of its first ``k`` items) and ``n`` is set to ``k``; in-place updates land in the
full arrays through the views, and what the bank replaced by a new value is copied back into the first
``k`` rows on exit.  An array whose row axis is not ``n`` long, or one whose shape beyond the row axis
changed inside the block, raises an error rather than mixing rows.  The attributes to narrow are found
once per bank and kept with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["first_rows"]

#: (owner, attribute, row axis: 0, 1, or -1 for a list)
_Plan = list[tuple[Any, str, int]]


def _plan(bank: Any, n: int, plan: _Plan) -> None:
    cls = type(bank)
    shared: frozenset[str] = cls._BANK_SHARED
    axis1: frozenset[str] = getattr(cls, "_BANK_ROW_AXIS1", frozenset())
    lists: frozenset[str] = getattr(cls, "_BANK_ROW_LISTS", frozenset())
    if bank.n != n:
        raise ValueError(f"{cls.__name__} has {bank.n} rows, its owner {n}")
    for name, value in vars(bank).items():
        if name in shared:
            continue
        if isinstance(value, np.ndarray):
            axis = 1 if name in axis1 else 0
            if value.ndim <= axis or value.shape[axis] != n:
                raise ValueError(f"{cls.__name__}.{name} {value.shape} has no row axis of {n}")
            plan.append((bank, name, axis))
        elif name in lists:
            if len(value) != n:
                raise ValueError(f"{cls.__name__}.{name} has {len(value)} items, not {n}")
            plan.append((bank, name, -1))
        elif hasattr(type(value), "_BANK_SHARED"):
            _plan(value, n, plan)
    plan.append((bank, "n", -2))


def _bank_plan(bank: Any) -> _Plan:
    plan: _Plan | None = getattr(bank, "_bank_plan", None)
    if plan is None:
        plan = []
        _plan(bank, int(bank.n), plan)
        bank._bank_plan = plan
    return plan


@contextmanager
def first_rows(bank: Any, k: int) -> Iterator[None]:
    """Within the block, ``bank`` is a bank of its first ``k`` rows (``0 < k <= bank.n``); the rows
    after them are left as they are."""
    n = int(bank.n)
    if not 0 < k <= n:
        raise ValueError(f"rows must be 1..{n}, not {k}")
    if k == n:
        yield
        return
    saved: list[tuple[Any, str, int, Any, Any]] = []
    try:
        for owner, name, axis in _bank_plan(bank):
            full = getattr(owner, name)
            if axis == 0:
                part = full[:k]
            elif axis == 1:
                part = full[:, :k]
            elif axis == -1:
                part = full[:k]
            else:
                part = k
            setattr(owner, name, part)
            saved.append((owner, name, axis, full, part))
        yield
    finally:
        broken = []
        for owner, name, axis, full, part in saved:
            now = getattr(owner, name)
            if axis == -1:  # a list: the part is a copy, changed in place or replaced
                full[:k] = now
            elif now is not part:  # an array replaced (one changed in place changed the full one)
                if axis >= 0:
                    if not isinstance(now, np.ndarray) or now.shape != part.shape:
                        broken.append(f"{type(owner).__name__}.{name}")
                    else:
                        if now.dtype != full.dtype:
                            full = full.astype(np.result_type(full, now))
                        if axis == 0:
                            full[:k] = now
                        else:
                            full[:, :k] = now
            setattr(owner, name, full)
        if broken:
            raise ValueError(f"changed shape while narrowed (rows mixed up): {', '.join(broken)}")
