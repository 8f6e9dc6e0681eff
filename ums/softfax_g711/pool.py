"""Receivers of many fax calls as rows of shared banks, stepped together every 20 ms.

What it does
------------
A fax receiver costs mostly per step, not per channel: one V.17 receiver alone spends most of its time
in numpy call overhead, a bank of 50 costs little more per step than a bank of one.  A
:class:`ModemPool` holds the V.21, V.17, V.29 and V.27 ter receivers of every G.711 fax call as rows of
shared banks (:class:`~.v21.FskRxBank`, :class:`~.v17.V17RxBank`, :class:`~.v29.V29RxBank`,
:class:`~.v27ter.V27terRxBank`).  :meth:`ModemPool.front_end` gives a call its
:class:`PooledFrontEnd`, which behaves like :class:`~.frontend.ModemFrontEnd` (same decisions, same
items) except that it does not answer at once: ``receive``, ``fillin`` and ``idle`` queue 20 ms pieces,
and :meth:`ModemPool.step` later runs every bank once per piece, for all calls together, and hands each
front end its items through ``on_items``.

How it works
------------
Every call delivers 20 ms of audio each 20 ms, so the calls stay in step: :meth:`ModemPool.step` runs
while *every* attached front end has a piece queued (a terminal that is transmitting queues ``idle``
pieces, so it never holds the others up).  Calls whose audio comes in different phases just wait for
each other, by at most one delivery block.  If one front end falls more than :attr:`ModemPool.max_backlog`
pieces behind (a stalled call, or one that was never closed), the others go on without it: its V.21
row is held and its image-modem row bridges the gap as after packet loss; after
:attr:`ModemPool.drop_after` such steps in a row it is closed.

Per step and per bank, the rows of the calls that need that receiver for their piece (what
:meth:`ModemFrontEnd._needs` says: V.21 and the image modem while undecided, only the winner after)
get their samples; a bank nobody needs is not run.  A V.17 or V.21 bank steps only its rows up to
the highest one fed (``receive_first``, see :mod:`.banks`): the rows above it are held as they are, as
a single receiver that is not fed; other rows below it get silence (either way they are reset or
restarted before they are used again).  The other banks step all their rows.  A lost piece
(``fillin``) is bridged by the image-modem banks (carrier and clocks run on, see
:meth:`~.v17.V17RxBank.fillin`) and skipped by V.21 (the row is held, as if not fed).  Rows are
allocated per call and modem the first time the call listens for that modem, the lowest free row
first (so the rows in use stay packed at the start of a bank), and kept until
:meth:`PooledFrontEnd.close`, so a V.17 short train finds the equaliser of the call's last long train.
Banks have :attr:`ModemPool.bank_size` rows; a new bank is made when all are taken.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .common import RxOutput
from .frontend import FrontEndItem, FrontEndOutput, ListenMode, ModemFrontEnd
from .v17 import V17RxBank
from .v21 import FskRxBank
from .v27ter import V27terRxBank
from .v29 import V29RxBank

__all__ = ["ModemPool", "PooledFrontEnd"]

STEP = 160
_Kind = Literal["v21", "v17", "v29", "v27ter"]
_DATA, _LOST, _IDLE = 0, 1, 2
_Slot = tuple[int, int]  # (bank index, row)


class _Banks:
    """The banks of one receiver kind, with their rows given out to front ends."""

    def __init__(self, kind: _Kind, size: int, cutoff_dbm0: float) -> None:
        self.kind = kind
        self.size = size
        self.cutoff_dbm0 = cutoff_dbm0
        self.banks: list[Any] = []
        self.free: list[_Slot] = []
        self.used: list[int] = []  # rows in use per bank

    def _make(self) -> Any:
        if self.kind == "v21":
            return FskRxBank(self.size, 2, cutoff_dbm0=self.cutoff_dbm0)
        if self.kind == "v17":
            return V17RxBank(self.size, 14400, cutoff_dbm0=self.cutoff_dbm0)
        if self.kind == "v29":
            return V29RxBank(self.size, 9600, cutoff_dbm0=self.cutoff_dbm0)
        return V27terRxBank(self.size, 4800, cutoff_dbm0=self.cutoff_dbm0)

    def allocate(self) -> _Slot:
        """The lowest free row of the first bank with one (rows in use stay packed at the start of a
        bank, which steps only up to its highest row fed)."""
        if not self.free:
            b = len(self.banks)
            self.banks.append(self._make())
            self.used.append(0)
            self.free = [(b, r) for r in range(self.size)]
        slot = heapq.heappop(self.free)
        self.used[slot[0]] += 1
        return slot

    def release(self, slot: _Slot) -> None:
        self.used[slot[0]] -= 1
        heapq.heappush(self.free, slot)

    def run(self, feeds: dict[_Slot, tuple[npt.NDArray[np.int16] | None, int]]) -> dict[_Slot, RxOutput]:
        """One step of every bank with a row in ``feeds`` (slot -> (samples, _DATA/_LOST)); the
        outputs of those rows."""
        by_bank: dict[int, list[tuple[int, npt.NDArray[np.int16] | None, int]]] = {}
        for (b, r), (x, code) in feeds.items():
            by_bank.setdefault(b, []).append((r, x, code))
        out: dict[_Slot, RxOutput] = {}
        for b, rows in by_bank.items():
            bank = self.banks[b]
            # V.17 and V.21 banks step their rows up to the highest one fed (the others are held).
            size = max(r for r, _, _ in rows) + 1 if self.kind in ("v17", "v21") else self.size
            x = np.zeros((size, STEP), dtype=np.int16)
            lost = np.zeros(size, dtype=np.bool_)
            for r, xr, code in rows:
                if code == _DATA and xr is not None:
                    x[r] = xr
                else:
                    lost[r] = True
            if self.kind == "v21":
                outs = bank.receive_first(x, hold=lost if lost.any() else None)
            elif self.kind == "v17":
                outs = bank.receive_first(x, np.repeat(lost[:, None], STEP, axis=1) if lost.any() else None)
            else:
                outs = bank.receive(x, lost if lost.any() else None)
            for r, _, _ in rows:
                out[(b, r)] = outs[r]
        return out


class PooledFrontEnd(ModemFrontEnd):
    """A :class:`~.frontend.ModemFrontEnd` whose receivers are rows of a :class:`ModemPool`.

    ``receive``, ``fillin`` and ``idle`` queue the samples and return an empty output; the items come
    later, from :meth:`ModemPool.step`, through ``on_items`` (or collect in :attr:`items` when it is
    None).  :meth:`close` gives the rows back.
    """

    deferred = True

    def __init__(self, pool: ModemPool, *, framing_ok_flags: int = 5) -> None:
        self._pool = pool
        self._slots: dict[str, _Slot] = {}
        self._queue: deque[tuple[int, npt.NDArray[np.int16] | None]] = deque()
        self._part = np.zeros(0, dtype=np.int16)
        self._part_code = _DATA
        self.on_items: Callable[[list[FrontEndItem]], None] | None = None
        self.items: list[FrontEndItem] = []
        self.closed = False
        self._stalled = 0  # steps in a row without a piece
        super().__init__(
            v21_cutoff_dbm0=pool.v21_cutoff_dbm0,
            fast_cutoff_dbm0=pool.fast_cutoff_dbm0,
            framing_ok_flags=framing_ok_flags,
        )
        self._slots["v21"] = pool._banks["v21"].allocate()
        self._reset_v21()

    # -- the receivers are rows of the pool's banks ---------------------------------------------------

    def _slot(self, kind: _Kind) -> _Slot:
        slot = self._slots.get(kind)
        if slot is None:
            slot = self._pool._banks[kind].allocate()
            self._slots[kind] = slot
        return slot

    def _restart_fast(self, mode: ListenMode) -> None:
        assert mode.modem is not None
        kind: _Kind = mode.modem
        b, r = self._slot(kind)
        bank = self._pool._banks[kind].banks[b]
        if kind == "v17":
            bank.restart(r, mode.rate, mode.short_train)
        else:
            bank.restart(r, mode.rate)

    def _reset_v21(self) -> None:
        slot = self._slots.get("v21")
        if slot is not None:
            self._pool._banks["v21"].banks[slot[0]].reset_channel(slot[1])
        self._hdlc.reset()

    def reset(self) -> None:
        # Pieces still queued were heard before whatever made the terminal listen afresh.
        self._queue = deque((_IDLE, None) if code == _DATA else (code, x) for code, x in self._queue)
        super().reset()

    # -- samples in -------------------------------------------------------------------------------------

    def receive(self, samples: npt.ArrayLike) -> FrontEndOutput:
        """Queue int16 samples; the items come from :meth:`ModemPool.step`."""
        x = np.asarray(samples, dtype=np.int16).ravel()
        if x.size == STEP and not self._part.size and not self.closed:
            self._queue.append((_DATA, x))  # the usual 20 ms block
        else:
            self._put(x, _DATA)
        return FrontEndOutput()

    def fillin(self, n: int) -> FrontEndOutput:
        """Queue ``n`` lost samples."""
        self._put(np.zeros(max(0, int(n)), dtype=np.int16), _LOST)
        return FrontEndOutput()

    def idle(self, n: int) -> None:
        """``n`` samples during which nothing is listened to (the terminal is transmitting)."""
        if n == STEP and not self._part.size and not self.closed:
            self._queue.append((_IDLE, None))  # the usual 20 ms block
        else:
            self._put(np.zeros(max(0, int(n)), dtype=np.int16), _IDLE)

    def _put(self, x: npt.NDArray[np.int16], code: int) -> None:
        if self.closed or x.size == 0:
            return
        if self._part.size:
            x = np.concatenate([self._part, x])
            code = max(code, self._part_code)
        whole = x.size - x.size % STEP
        for start in range(0, whole, STEP):
            self._queue.append((code, x[start : start + STEP] if code == _DATA else None))
        self._part = x[whole:]
        self._part_code = code if self._part.size else _DATA

    @property
    def queued(self) -> int:
        """Pieces waiting for :meth:`ModemPool.step`."""
        return len(self._queue)

    def close(self) -> None:
        """Leave the pool (the call is over, or went to T.38)."""
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._pool._detach(self)
        for kind, slot in self._slots.items():
            self._pool._banks[kind].release(slot)  # type: ignore[index]
        self._slots.clear()

    def _deliver(self, items: list[FrontEndItem]) -> None:
        if not items:
            return
        if self.on_items is not None:
            self.on_items(items)
        else:
            self.items.extend(items)


class ModemPool:
    """Banks of fax receivers shared by the G.711 fax calls of a process (see the module docstring).

    Sans-I/O: the owner calls :meth:`step` after giving front ends their audio (it does nothing until
    every front end has a piece).
    """

    def __init__(
        self,
        *,
        bank_size: int = 64,
        v21_cutoff_dbm0: float = -45.5,
        fast_cutoff_dbm0: float = -45.5,
        max_backlog: int = 12,
        drop_after: int = 250,
    ) -> None:
        if bank_size < 1:
            raise ValueError("bank_size must be at least 1")
        self.bank_size = bank_size
        self.v21_cutoff_dbm0 = v21_cutoff_dbm0
        self.fast_cutoff_dbm0 = fast_cutoff_dbm0
        #: Pieces a front end may be ahead of the slowest before the others go on without it.
        self.max_backlog = max_backlog
        #: Steps a front end may go without audio before the pool drops it (5 s).
        self.drop_after = drop_after
        self._banks: dict[_Kind, _Banks] = {
            "v21": _Banks("v21", bank_size, v21_cutoff_dbm0),
            "v17": _Banks("v17", bank_size, fast_cutoff_dbm0),
            "v29": _Banks("v29", bank_size, fast_cutoff_dbm0),
            "v27ter": _Banks("v27ter", bank_size, fast_cutoff_dbm0),
        }
        self._members: list[PooledFrontEnd] = []
        #: Steps run so far, and steps in which some front end had no piece.
        self.steps = 0
        self.stalled_steps = 0

    def front_end(self, *, framing_ok_flags: int = 5) -> PooledFrontEnd:
        """A front end for a new call."""
        fe = PooledFrontEnd(self, framing_ok_flags=framing_ok_flags)
        self._members.append(fe)
        return fe

    def _detach(self, fe: PooledFrontEnd) -> None:
        if fe in self._members:
            self._members.remove(fe)

    @property
    def channels(self) -> int:
        """Front ends attached."""
        return len(self._members)

    def banks(self, kind: _Kind) -> int:
        """Banks made so far for ``kind``."""
        return len(self._banks[kind].banks)

    def step(self) -> int:
        """Run the banks while every front end has a piece queued; returns the number of steps."""
        done = 0
        while self._members:
            counts = [len(fe._queue) for fe in self._members]
            if min(counts) == 0 and max(counts) <= self.max_backlog:
                break
            self._step_once()
            done += 1
        return done

    def _step_once(self) -> None:
        self.steps += 1
        work: list[tuple[PooledFrontEnd, str | None, bool]] = []
        feeds: dict[_Kind, dict[_Slot, tuple[npt.NDArray[np.int16] | None, int]]] = {
            k: {} for k in self._banks
        }
        stalled = False
        for fe in list(self._members):
            if not fe._queue:
                stalled = True
                fe._stalled += 1
                if fe._stalled > self.drop_after:
                    # Never closed, or its call went silent for good: stop waiting for it.
                    fe.close()
                    continue
                # Fell behind: hold V.21, bridge the image modem.
                feeds["v21"][fe._slots["v21"]] = (None, _LOST)
                if fe.mode.modem is not None and fe.mode.modem in fe._slots:
                    feeds[fe.mode.modem][fe._slots[fe.mode.modem]] = (None, _LOST)
                continue
            fe._stalled = 0
            code, x = fe._queue.popleft()
            if code == _IDLE:
                continue
            need_fast, need_v21 = fe._needs()
            modem = fe.mode.modem
            if need_fast and modem is not None:
                feeds[modem][fe._slot(modem)] = (x, code)
            if need_v21 and code == _DATA:
                feeds["v21"][fe._slots["v21"]] = (x, code)
            elif need_v21:
                feeds["v21"][fe._slots["v21"]] = (None, _LOST)
            work.append((fe, modem if need_fast else None, need_v21 and code == _DATA))
        if stalled:
            self.stalled_steps += 1
        outs: dict[_Kind, dict[_Slot, RxOutput]] = {}
        for kind, feed in feeds.items():
            if feed:
                outs[kind] = self._banks[kind].run(feed)
        for fe, fed_modem, fed_v21 in work:
            fast_out = v21_out = None
            if fed_modem is not None:
                fast_out = outs[fed_modem][fe._slots[fed_modem]]  # type: ignore[index]
            if fed_v21:
                v21_out = outs["v21"][fe._slots["v21"]]
            items: list[FrontEndItem] = []
            fe._absorb(STEP, fast_out, v21_out, items)
            fe._deliver(items)
