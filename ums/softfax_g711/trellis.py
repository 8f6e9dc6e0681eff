"""V.17 trellis coding: signal-space mapping, differential and convolutional encoding, Viterbi decoding.

What it does
    The coding half of ITU-T V.17 §2 (the same code as V.32/V.32bis): each symbol carries the data bits
    Q1..Qk (k = 3, 4, 5, 6 at 7200, 9600, 12000, 14400 bit/s).  Q1 Q2 are differentially encoded into
    Y1 Y2 (the differential encoding table of V.17 §2), an 8-state systematic convolutional encoder
    adds the redundant bit Y0, and Y0 Y1 Y2 Q3..Qk select one point of a 16, 32, 64 or 128 point
    signal space (the signal-space diagrams of V.17 §2).  The receiver side is an 8-state Viterbi
    decoder on soft (complex) symbols.

How it works
    A point's index is ``Y0 | Y1 << 1 | Y2 << 2 | Q3 << 3 | Q4 << 4 ...``.  The eight points sharing the
    uncoded bits are quarter-turn rotations of two base points, and the differential code makes the
    data invariant to such a rotation of the received signal.  Everything is vectorised across a bank of
    ``n`` channels: state arrays are shaped ``(n, ...)``.  The encoder state sequence is found with a
    parallel prefix composition of the per-symbol state maps, so encoding has no loop per symbol.  The
    decoder runs one add-compare-select step per symbol for all channels at once, then traces back
    every decision of the block together; branch metrics come from a lookup table of the few points of
    each subset that can be nearest anywhere in a small cell of the plane.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "ABCD",
    "GRID_HALF",
    "GRID_N",
    "GRID_STEP",
    "RATES",
    "TRACEBACK_DEPTH",
    "TrellisEncoder",
    "ViterbiBank",
    "bits_per_symbol",
    "constellation",
    "convolutional_encode",
    "decision_grid",
    "differential_decode",
    "differential_encode",
    "nearest_points",
    "rate_index",
]

Complex = npt.NDArray[np.complex128]
Ints = npt.NDArray[np.int64]

#: Data signalling rates of V.17 trellis-coded modulation.
RATES: tuple[int, ...] = (14400, 12000, 9600, 7200)
_BITS_PER_SYMBOL = {14400: 6, 12000: 5, 9600: 4, 7200: 3}

#: Symbols of decoding delay: a decision is traced back from the best state this many symbols later,
#: less one (as SpanDSP's 16-symbol trellis history).
TRACEBACK_DEPTH = 16

#: V.17 §7: training points A, B, C, D.
ABCD: Complex = np.array([-6 - 2j, 2 - 6j, 6 + 2j, -2 + 6j], dtype=np.complex128)

# V.17 §2 signal-space diagrams.  For each value of the uncoded bits (Q3 lowest), the points with
# Y0 Y1 Y2 = 000 and Y0 Y1 Y2 = 100.  The point with Y1 Y2 = d (d = Y1 + 2 Y2) is the base point for
# Y0 xor (d & 1), turned d quarter turns clockwise.
_BASE_POINTS: dict[int, tuple[tuple[complex, complex], ...]] = {
    14400: (
        (-8 - 3j, 9 + 2j),
        (-8 + 1j, 9 - 2j),
        (-4 - 3j, 5 + 2j),
        (-4 + 1j, 5 - 2j),
        (4 - 3j, -3 + 2j),
        (4 + 1j, -3 - 2j),
        (0 - 3j, 1 + 2j),
        (0 + 1j, 1 - 2j),
        (8 - 3j, -7 + 2j),
        (8 + 1j, -7 - 2j),
        (-4 - 7j, 5 + 6j),
        (-4 + 5j, 5 - 6j),
        (4 - 7j, -3 + 6j),
        (4 + 5j, -3 - 6j),
        (0 - 7j, 1 + 6j),
        (0 + 5j, 1 - 6j),
    ),
    12000: (
        (7 + 1j, -5 - 1j),
        (3 - 3j, -1 + 3j),
        (7 - 7j, -5 + 7j),
        (-1 - 7j, 3 + 7j),
        (3 + 5j, -1 - 5j),
        (-1 + 1j, 3 - 1j),
        (-5 + 5j, 7 - 5j),
        (-5 - 3j, 7 + 3j),
    ),
    9600: (
        (-8 + 2j, -6 - 4j),
        (0 + 2j, -6 + 4j),
        (0 - 6j, 2 - 4j),
        (8 + 2j, 2 + 4j),
    ),
    7200: (
        (6 - 6j, -2 + 6j),
        (-2 + 2j, 6 - 2j),
    ),
}


def rate_index(bit_rate: int) -> int:
    """Position of ``bit_rate`` in :data:`RATES`; ValueError for a rate V.17 does not have."""
    try:
        return RATES.index(bit_rate)
    except ValueError:
        raise ValueError(f"V.17 has no {bit_rate} bit/s mode") from None


def bits_per_symbol(bit_rate: int) -> int:
    """Data bits per symbol (V.17 §2): 6, 5, 4, 3 at 14400, 12000, 9600, 7200 bit/s."""
    rate_index(bit_rate)
    return _BITS_PER_SYMBOL[bit_rate]


def _build_constellation(bit_rate: int) -> Complex:
    base = _BASE_POINTS[bit_rate]
    points = np.zeros(8 * len(base), dtype=np.complex128)
    for upper, pair in enumerate(base):
        for d in range(4):
            for y0 in range(2):
                points[upper << 3 | d << 1 | y0] = pair[y0 ^ (d & 1)] * (-1j) ** d
    return points


_CONSTELLATIONS: tuple[Complex, ...] = tuple(_build_constellation(r) for r in RATES)


def constellation(bit_rate: int) -> Complex:
    """The signal space of ``bit_rate`` (V.17 §2), indexed by ``Y0 | Y1<<1 | Y2<<2 | Q3<<3 ...``
    (a copy)."""
    return _CONSTELLATIONS[rate_index(bit_rate)].copy()


# --- differential and convolutional encoding -------------------------------------------------------


def differential_encode(q12: npt.ArrayLike, previous: npt.ArrayLike) -> tuple[Ints, Ints]:
    """V.17 §2 differential encoding: ``Y1 Y2`` from ``Q1 Q2`` and the previous ``Y1 Y2``.  Values are
    ``Q1 + 2 Q2`` and ``Y1 + 2 Y2``: the code is addition modulo 4.  ``q12`` is ``(..., N)``,
    ``previous`` ``(...)``; returns the ``(..., N)`` outputs and the last one."""
    q = np.asarray(q12, dtype=np.int64)
    prev = np.asarray(previous, dtype=np.int64)
    d = (prev[..., None] + np.cumsum(q, axis=-1)) & 3
    last = d[..., -1] if d.shape[-1] else prev.copy()
    return d, last


def differential_decode(d: npt.ArrayLike, previous: npt.ArrayLike) -> tuple[Ints, Ints]:
    """Inverse of :func:`differential_encode`: ``Q1 + 2 Q2`` from successive ``Y1 + 2 Y2``."""
    y = np.asarray(d, dtype=np.int64)
    prev = np.asarray(previous, dtype=np.int64)
    full = np.concatenate([prev[..., None], y], axis=-1)
    q = (full[..., 1:] - full[..., :-1]) & 3
    return q, full[..., -1].copy()


def _next_state_table() -> Ints:
    """The V.17 §2 convolutional encoder as a table ``[state, Y1 + 2 Y2] -> next state``.  State bits
    ``s0 | s1<<1 | s2<<2`` are the three delay cells; ``Y0 = s0``."""
    table = np.zeros((8, 4), dtype=np.int64)
    for s in range(8):
        s0, s1, s2 = s & 1, s >> 1 & 1, s >> 2 & 1
        for d in range(4):
            y1, y2 = d & 1, d >> 1
            n0 = s1 ^ y2 ^ (s0 & y1)
            n1 = s2 ^ y1 ^ y2 ^ (s0 & s1) ^ (s0 & y2)
            table[s, d] = n0 | n1 << 1 | s0 << 2
    return table


_NEXT = _next_state_table()


def convolutional_encode(d: npt.ArrayLike, state: npt.ArrayLike) -> tuple[Ints, Ints]:
    """The 8-state systematic encoder (V.17 §2) on ``d = Y1 + 2 Y2`` ``(n, N)`` from ``state``
    ``(n,)``: returns ``Y0`` ``(n, N)`` and the final states.  The state sequence is a prefix composition
    of the per-symbol maps ``state -> next``, done in log2(N) vectorised steps."""
    dd = np.asarray(d, dtype=np.int64)
    s0 = np.asarray(state, dtype=np.int64)
    n, length = dd.shape
    if length == 0:
        return np.zeros((n, 0), dtype=np.int64), s0.copy()
    maps = _NEXT.T[dd]  # (n, N, 8): the state after each symbol, for every state before it
    shift = 1
    while shift < length:
        # Compose: first the maps up to t - shift, then those from t - shift + 1 to t.
        maps[:, shift:] = np.take_along_axis(maps[:, shift:], maps[:, :-shift], axis=2)
        shift *= 2
    after = np.take_along_axis(maps, np.broadcast_to(s0[:, None, None], (n, length, 1)), axis=2)[..., 0]
    before = np.concatenate([s0[:, None], after[:, :-1]], axis=1)
    return before & 1, after[:, -1].copy()


class TrellisEncoder:
    """V.17 §2 encoder for a bank of ``n`` channels: data words -> point indices.

    A data word holds ``Q1 | Q2<<1 | Q3<<2 ...`` (Q1 the first bit in time).  ``diff`` is the previous
    ``Y1 + 2 Y2`` and ``state`` the convolutional encoder's cells, both ``(n,)``.
    """

    def __init__(self, n: int = 1, diff: int = 0) -> None:
        self.diff: Ints = np.full(n, diff, dtype=np.int64)
        self.state: Ints = np.zeros(n, dtype=np.int64)

    def encode(self, words: npt.ArrayLike) -> Ints:
        """Point indices ``(n, N)`` for data words ``(n, N)``."""
        w = np.asarray(words, dtype=np.int64)
        d, self.diff = differential_encode(w & 3, self.diff)
        y0, self.state = convolutional_encode(d, self.state)
        return np.asarray(y0 | d << 1 | (w >> 2) << 3, dtype=np.int64)


# --- decoding ----------------------------------------------------------------------------------------


def _predecessors() -> tuple[Ints, Ints]:
    """For each next state, its four (state, subset) branches; subset = ``Y0 | (Y1 + 2 Y2) << 1``."""
    pred_state = np.zeros((8, 4), dtype=np.int64)
    pred_subset = np.zeros((8, 4), dtype=np.int64)
    fill = np.zeros(8, dtype=np.int64)
    for s in range(8):
        for d in range(4):
            ns = _NEXT[s, d]
            pred_state[ns, fill[ns]] = s
            pred_subset[ns, fill[ns]] = (s & 1) | d << 1
            fill[ns] += 1
    assert (fill == 4).all()
    return pred_state, pred_subset


_PRED_STATE, _PRED_SUBSET = _predecessors()

#: Lookup grid over the plane for branch metrics and hard decisions: ``GRID_N`` cells of ``GRID_STEP``
#: per axis from ``-GRID_HALF``; values outside fall in the edge cells.
GRID_HALF = 10.0
GRID_STEP = 0.5
GRID_N = int(2 * GRID_HALF / GRID_STEP)
_GRID_HALF = GRID_HALF
_GRID_STEP = GRID_STEP
_GRID_N = GRID_N
_OFFSETS = np.cumsum([0] + [c.size for c in _CONSTELLATIONS])
#: Every constellation, end to end; rate ``r`` owns ``_ALL_POINTS[_OFFSETS[r]:_OFFSETS[r + 1]]``.
_ALL_POINTS: Complex = np.concatenate(_CONSTELLATIONS)


def _cell_tables() -> tuple[Ints, Ints]:
    """Per rate and grid cell: (a) for each of the 8 subsets, the two points nearest the cell's centre
    among those that are nearest in their subset somewhere in the cell (found on a 7 x 7 raster of the
    cell; the first again when there is one); (b) the point nearest the cell's centre.  Indices are
    into ``_ALL_POINTS``.  Two candidates give the exact subset distance except far from the subset,
    where it no longer matters."""
    k_max = 2
    sub = np.linspace(0.0, _GRID_STEP, 7)
    corners = -_GRID_HALF + _GRID_STEP * np.arange(_GRID_N)
    table = np.zeros((len(RATES), _GRID_N, _GRID_N, 8, k_max), dtype=np.int64)
    nearest = np.zeros((len(RATES), _GRID_N, _GRID_N), dtype=np.int64)
    for r, points in enumerate(_CONSTELLATIONS):
        members = points.reshape(-1, 8)  # (M / 8, 8): column = subset
        for i in range(_GRID_N):
            xs = corners[i] + sub
            samples = (xs[None, :, None] + 1j * (corners[:, None, None] + sub[None, None, :])).reshape(
                _GRID_N, -1
            )
            centre = corners[i] + _GRID_STEP / 2 + 1j * (corners + _GRID_STEP / 2)  # (G,)
            off = samples[..., None, None] - members  # (G, S, M / 8, 8)
            best = np.argmin(off.real**2 + off.imag**2, axis=2)  # (G, S, 8): row in members
            to_centre = np.abs(members[best, np.arange(8)] - centre[:, None, None])  # (G, S, 8)
            first_s = np.argmin(to_centre, axis=1)  # (G, 8)
            first = np.take_along_axis(best, first_s[:, None, :], axis=1)[:, 0, :]
            other = np.where(best == first[:, None, :], np.inf, to_centre)
            second_s = np.argmin(other, axis=1)
            second = np.take_along_axis(best, second_s[:, None, :], axis=1)[:, 0, :]
            second = np.where(np.isinf(np.min(other, axis=1)), first, second)
            table[r, i, :, :, 0] = _OFFSETS[r] + first * 8 + np.arange(8)
            table[r, i, :, :, 1] = _OFFSETS[r] + second * 8 + np.arange(8)
            nearest[r, i] = _OFFSETS[r] + np.argmin(np.abs(centre[:, None] - points) ** 2, axis=1)
    return table, nearest


_SUBSET_CANDIDATES, _NEAREST = _cell_tables()
_K = _SUBSET_CANDIDATES.shape[-1]
# Flat per cell ``(rate * GRID_N + ix) * GRID_N + iy``: candidate ``k`` of subset ``j`` at ``[cell, k, j]``,
# as an index into the rate's own constellation and as a point.
_CAND_GLOBAL = _SUBSET_CANDIDATES.transpose(0, 1, 2, 4, 3).reshape(-1, _K, 8)
_CAND_IDX = (
    _CAND_GLOBAL - _OFFSETS[np.repeat(np.arange(len(RATES)), GRID_N * GRID_N)][:, None, None]
).ravel()
_CAND_PTS = _ALL_POINTS[_CAND_GLOBAL]  # (cells, K, 8)
_CAND_PTS_T = _CAND_PTS.transpose(1, 0, 2).reshape(_K, -1).copy()  # (K, cells * 8)
_CAND_C64 = _CAND_PTS.astype(np.complex64).transpose(1, 0, 2).copy()  # (K, cells, 8)
_PRED_STATE_T = _PRED_STATE.T.astype(np.int8)  # (4, 8): [branch, next state]
# The add-compare-select loop of ViterbiBank relies on this layout of the predecessors.
assert (_PRED_STATE_T == 2 * np.arange(4)[:, None] + (np.arange(8) >= 4)[None, :]).all()
_PRED_SUBSET_T = _PRED_SUBSET.T.copy()
_STATES = np.arange(8)
_HIGH_HALF = (_STATES >= 4).astype(np.int8)


def decision_grid(points: npt.ArrayLike) -> Complex:
    """``(GRID_N, GRID_N)``: the point of ``points`` nearest each grid cell's centre (index ``[ix, iy]``
    for the cell of ``(x, y)``)."""
    p = np.asarray(points, dtype=np.complex128).ravel()
    c = -GRID_HALF + GRID_STEP * (np.arange(GRID_N) + 0.5)
    centres = c[:, None] + 1j * c[None, :]
    return np.asarray(p[np.argmin(np.abs(centres[..., None] - p) ** 2, axis=2)], dtype=np.complex128)


def _cells(z: Complex) -> tuple[Ints, Ints]:
    ix = np.clip(((z.real + _GRID_HALF) * (1.0 / _GRID_STEP)).astype(np.int64), 0, _GRID_N - 1)
    iy = np.clip(((z.imag + _GRID_HALF) * (1.0 / _GRID_STEP)).astype(np.int64), 0, _GRID_N - 1)
    return ix, iy


def nearest_points(z: npt.ArrayLike, rates: npt.ArrayLike) -> Complex:
    """Hard decision: the signal point nearest each ``z`` (to within the lookup grid's 0.5 resolution),
    for per-element rate indices ``rates`` (see :func:`rate_index`)."""
    zz = np.asarray(z, dtype=np.complex128)
    ix, iy = _cells(zz)
    return _ALL_POINTS[_NEAREST[np.asarray(rates, dtype=np.int64), ix, iy]]


def _argmin_first(a: npt.NDArray[np.floating]) -> npt.NDArray[np.int8]:
    """``argmin(a, axis=0)`` for a short first axis, elementwise (numpy's arg-reductions over a
    non-last axis copy the array)."""
    best = a[0]
    idx = np.zeros(best.shape, dtype=np.int8)
    for k in range(1, a.shape[0]):
        better = a[k] < best
        best = np.where(better, a[k], best)
        idx[better] = k
    return idx


class ViterbiBank:
    """8-state Viterbi decoders for ``n`` channels (V.17 §2 code), on soft symbols in the units of
    :func:`constellation`.

    :meth:`decode` takes up to ``T`` symbols per channel and gives one decision per symbol taken,
    ``TRACEBACK_DEPTH - 1`` symbols late: the first decisions after :meth:`reset` belong to no symbol.
    Decisions come out as data words (``Q1 | Q2<<1 | ...``) after differential decoding, and as the
    chosen point indices.  The path metric is the squared Euclidean distance; each decision is the
    survivor of the best state ``TRACEBACK_DEPTH - 1`` symbols on, so a block size never changes the
    result.  Survivors keep only the branch taken; the point within the decided subset is found again
    from the kept symbol once the path is known.
    """

    #: Per-channel arrays (see :mod:`.banks`); the path metrics are state-major.
    _BANK_SHARED: frozenset[str] = frozenset()
    _BANK_ROW_AXIS1: frozenset[str] = frozenset({"metric"})

    def __init__(self, n: int, bit_rate: int = 14400, depth: int = TRACEBACK_DEPTH) -> None:
        if depth < 2:
            raise ValueError("depth must be at least 2")
        self.n = n
        self.depth = depth
        h = depth - 1
        self.rate: Ints = np.full(n, rate_index(bit_rate), dtype=np.int64)
        self.metric = np.zeros((8, n), dtype=np.float32)  # state-major
        self.diff: Ints = np.zeros(n, dtype=np.int64)
        # The last ``depth - 1`` trellis steps of each channel: the branch into every state, the best
        # state after the step, and the symbol (and its lookup cell).
        self._choice = np.zeros((n, h, 8), dtype=np.int8)
        self._best = np.zeros((n, h), dtype=np.int64)
        self._z = np.zeros((n, h), dtype=np.complex128)
        self._cell = np.zeros((n, h), dtype=np.int64)
        self.reset(np.arange(n), bit_rate)

    def reset(self, channels: npt.ArrayLike, bit_rate: int, diff: int = 0) -> None:
        """Start ``channels`` afresh at ``bit_rate``: path metrics favour state 0 (where the encoder
        starts), the history holds nothing, the differential decoder's previous value is ``diff``."""
        ch = np.asarray(channels, dtype=np.int64)
        self.rate[ch] = rate_index(bit_rate)
        self.metric[:, ch] = 1.0e4
        self.metric[0, ch] = 0.0
        self.diff[ch] = diff
        self._choice[ch] = 0
        self._best[ch] = 0
        self._z[ch] = 0.0
        self._cell[ch] = self.rate[ch][:, None] * GRID_N * GRID_N

    def set_diff(self, channels: npt.ArrayLike, diff: int) -> None:
        """Set the differential decoder's previous ``Y1 + 2 Y2``."""
        self.diff[np.asarray(channels, dtype=np.int64)] = diff

    @staticmethod
    def _cells_flat(z: Complex, rate: Ints) -> Ints:
        n, t_len = z.shape
        g = ((z.view(np.float64).reshape(n, t_len, 2) + GRID_HALF) * (1.0 / GRID_STEP)).astype(np.int64)
        np.maximum(g, 0, out=g)  # np.clip(g, 0, GRID_N - 1, out=g) without its Python overhead
        np.minimum(g, GRID_N - 1, out=g)
        return np.asarray((rate[:, None] * GRID_N + g[..., 0]) * GRID_N + g[..., 1], dtype=np.int64)

    @staticmethod
    def _subset_distances(z: Complex, cell: Ints) -> npt.NDArray[np.float32]:
        """``(K, n, T, 8)`` squared distances to each subset's candidate points -> min over ``K``."""
        off = _CAND_C64[:, cell]
        off -= z.astype(np.complex64)[None, :, :, None]
        sq = off.view(np.float32).reshape(*off.shape, 2)
        sq *= sq
        both = sq[..., 0] + sq[..., 1]
        return np.asarray(np.minimum(both[0], both[1]) if _K == 2 else both.min(axis=0), dtype=np.float32)

    @staticmethod
    def _nearest_in_subset(z: Complex, cell: Ints, subset: Ints) -> Ints:
        """Index (in the rate's constellation) of the nearest point of ``subset`` to ``z``."""
        flat = cell * 8 + subset
        off = _CAND_PTS_T[:, flat] - z[None]
        k = _argmin_first(off.real * off.real + off.imag * off.imag)
        return np.asarray(_CAND_IDX[(cell * _K + k) * 8 + subset], dtype=np.int64)

    def branch_metrics(self, z: Complex) -> tuple[npt.NDArray[np.float64], Ints]:
        """For symbols ``z`` ``(n, T)``: squared distance to the nearest point of each subset and that
        point's index into the channel's constellation, both ``(n, T, 8)``."""
        zz = np.ascontiguousarray(z, dtype=np.complex128)
        cell = self._cells_flat(zz, self.rate)
        dist = self._subset_distances(zz, cell).astype(np.float64)
        n, t_len = zz.shape
        subsets = np.broadcast_to(_STATES, (n, t_len, 8))
        idx = self._nearest_in_subset(
            np.broadcast_to(zz[..., None], (n, t_len, 8)),
            np.broadcast_to(cell[..., None], (n, t_len, 8)),
            subsets,
        )
        return dist, idx

    def decode(self, z: npt.ArrayLike, counts: npt.ArrayLike | None = None) -> tuple[Ints, Ints]:
        """Decode symbols ``z`` ``(n, T)``; channel ``c`` uses its first ``counts[c]`` (all by default).
        Returns ``(words, points)``, each ``(n, T)``, valid in the first ``counts[c]`` places of row
        ``c``: the data word and point index decided for the symbol ``depth - 1`` places earlier."""
        zz = np.ascontiguousarray(z, dtype=np.complex128)
        n, t_len = zz.shape
        cnt = np.full(n, t_len, dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
        words = np.zeros((n, t_len), dtype=np.int64)
        points = np.zeros((n, t_len), dtype=np.int64)
        busy = np.nonzero(cnt > 0)[0]
        if t_len == 0 or busy.size == 0:
            return words, points
        if busy.size == n:
            words, points = self._decode_rows(zz, cnt, slice(None))
        else:
            words[busy], points[busy] = self._decode_rows(zz[busy], cnt[busy], busy)
        return words, points

    def _decode_rows(self, zz: Complex, cnt: Ints, rows_idx: slice | Ints) -> tuple[Ints, Ints]:
        """:meth:`decode` for the channels ``rows_idx`` (each with at least one symbol)."""
        n, t_len = zz.shape
        h = self.depth - 1
        rate = self.rate[rows_idx]
        cell = self._cells_flat(zz, rate)
        # Branch metrics per step, as (T, branch, next state, n).
        dist = self._subset_distances(zz.T, cell.T).transpose(0, 2, 1)  # (T, 8, n)
        branch = dist[:, _PRED_SUBSET_T]
        cands = np.empty((t_len, 4, 8, n), dtype=np.float32)
        metrics = np.empty((t_len, 8, n), dtype=np.float32)
        metric = self.metric[:, rows_idx]
        live = np.arange(t_len)[:, None] < cnt[None, :]  # (T, n)
        full = int(cnt.min())  # steps every channel takes
        # The predecessor on branch b of state s is 2 b + (s >= 4) (see _PRED_STATE_T): with the states
        # as (s >= 4, s % 4), ``metric[_PRED_STATE_T]`` is ``metric`` as (4, 2, 1, n) broadcast.
        branch4 = branch.reshape(t_len, 4, 2, 4, n)
        cands4 = cands.reshape(t_len, 4, 2, 4, n)
        into = metrics.reshape(t_len, 2, 4, n)  # the new metrics, as (s >= 4, s % 4)
        prev = [metric.reshape(4, 2, 1, n), *metrics[:-1].reshape(t_len - 1, 4, 2, 1, n)]
        pairs = np.empty((2, 2, 4, n), dtype=np.float32)
        for t in range(t_len):
            cand = cands4[t]
            np.add(prev[t], branch4[t], out=cand)
            # the minimum over the 4 branches: of branches 0 / 2 and 1 / 3, then of the two
            np.minimum(cand[:2], cand[2:], out=pairs)
            np.minimum(pairs[0], pairs[1], out=into[t])
            if t >= full:
                new = metrics[t]
                new[...] = np.where(live[t], new, metrics[t - 1] if t else metric)
        metric = metrics[-1]
        self.metric[:, rows_idx] = metric - metric.min(axis=0)
        # The branch taken into each state: the first whose candidate equals the minimum.
        miss = [cands[:, j] != metrics for j in range(3)]
        choice8 = miss[2].view(np.int8) + 1
        choice8 *= miss[1].view(np.int8)
        choice8 += 1
        choice8 *= miss[0].view(np.int8)
        choice = choice8.transpose(2, 0, 1)  # (n, T, 8)
        best = np.ascontiguousarray(metrics.transpose(2, 0, 1)).argmin(axis=2)  # (n, T)
        all_choice = np.concatenate([self._choice[rows_idx], choice], axis=1)  # (n, h + T, 8)
        all_best = np.concatenate([self._best[rows_idx], best], axis=1)
        all_z = np.concatenate([self._z[rows_idx], zz], axis=1)
        all_cell = np.concatenate([self._cell[rows_idx], cell], axis=1)
        # The decision for history step t traces back from the best state at step t + h.
        rows = np.arange(n)[:, None]
        tt = np.arange(t_len)[None, :]
        start = np.minimum(tt + h, h + cnt[:, None] - 1)
        flat_pred = ((all_choice << 1) + _HIGH_HALF).ravel()  # _PRED_STATE_T[all_choice, _STATES]
        at = rows * ((h + t_len) * 8) + start * 8
        state = all_best[rows, start]
        for _ in range(h):
            state = flat_pred[at + state]
            at -= 8
        subset = _PRED_SUBSET_T[all_choice[rows, tt, state], state]
        decided = self._nearest_in_subset(all_z[:, :t_len], all_cell[:, :t_len], subset)
        # Keep the newest h steps of each channel.
        keep = cnt[:, None] + np.arange(h)[None, :]
        self._choice[rows_idx] = all_choice[rows, keep]
        self._best[rows_idx] = all_best[rows, keep]
        self._z[rows_idx] = all_z[rows, keep]
        self._cell[rows_idx] = all_cell[rows, keep]
        # Differential decoding, per channel over its valid decisions.
        d = (decided >> 1) & 3
        valid = tt < cnt[:, None]
        diff = self.diff[rows_idx]
        d_prev = np.concatenate([diff[:, None], d[:, :-1]], axis=1)
        words = ((d - d_prev) & 3) | (decided >> 3) << 2
        self.diff[rows_idx] = d[rows[:, 0], cnt - 1]
        return np.where(valid, words, 0), np.where(valid, decided, 0)
