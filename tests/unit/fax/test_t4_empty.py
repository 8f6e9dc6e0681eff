"""T.4 / T.6 coding of a page with no rows: only the end-of-page code (RTC, EOFB), or nothing."""

from __future__ import annotations

import numpy as np
import pytest

from ums.fax import t4
from ums.fax.t4 import Compression


def _bits(data: bytes) -> str:
    """Line-order bytes (first bit in the LSB) as a string of bits in transmission order."""
    return "".join(f"{b:08b}"[::-1] for b in data)


EOL = "000000000001"


@pytest.mark.parametrize("compression", ["mh", "mr", "mmr"])
@pytest.mark.parametrize("msb_first", [False, True])
def test_empty_page_with_end_code(compression: Compression, msb_first: bool) -> None:
    page = np.zeros((0, 1728), np.uint8)
    data = t4.encode(page, compression=compression, msb_first=msb_first)
    line = data if not msb_first else data.translate(bytes(int(f"{b:08b}"[::-1], 2) for b in range(256)))
    bits = _bits(line)
    # T.4 §4.1.4 RTC: six EOLs (EOL + tag 1 in MR); T.6 §2.4 EOFB: two EOLs; then zero padding
    code = {"mh": EOL * 6, "mr": (EOL + "1") * 6, "mmr": EOL * 2}[compression]
    assert bits.startswith(code) and set(bits[len(code) :]) <= {"0"}
    assert len(data) == (len(code) + 7) // 8
    res = t4.decode(data, width=1728, compression=compression, msb_first=msb_first)
    assert res.page.shape == (0, 1728)
    assert (res.rows, res.bad_rows, res.longest_bad_run) == (0, 0, 0)
    assert res.end_of_page


@pytest.mark.parametrize("compression", ["mh", "mr", "mmr"])
def test_empty_page_without_end_code(compression: Compression) -> None:
    page = np.zeros((0, 2048), np.bool_)
    data = t4.encode(page, compression=compression, rtc=False)
    assert data == b""
    res = t4.decode(data, width=2048, compression=compression)
    assert res.page.shape == (0, 2048) and res.rows == 0 and res.bad_rows == 0


@pytest.mark.parametrize("compression", ["mh", "mr"])
def test_empty_page_aligned_rtc_and_fill(compression: Compression) -> None:
    """Byte-aligned EOLs and a minimum scan-line length: every EOL still ends on a byte boundary."""
    page = np.zeros((0, 1728), np.uint8)
    data = t4.encode(page, compression=compression, eol_align=True, min_row_bits=400)
    bits = _bits(data)
    tag = "1" if compression == "mr" else ""
    ends = [i + len(EOL) for i in range(len(bits)) if bits.startswith(EOL, i)]
    assert len(ends) == 6 and all(e % 8 == 0 for e in ends)
    assert bits[ends[-1] : ends[-1] + len(tag)] == tag
    res = t4.decode(data, width=1728, compression=compression)
    assert res.rows == 0 and res.end_of_page
    # the same end code closes a page with rows
    one = t4.encode(np.zeros((1, 1728), np.uint8), compression=compression, eol_align=True)
    assert one.endswith(data[-(len(data) - 1) :])
