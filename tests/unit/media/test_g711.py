"""G.711 tables: exhaustive checks against a quantiser built from the G.711 segment tables."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from ums.media import g711

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


def _quantise(
    magnitude: npt.NDArray[np.int64], bounds: list[int], steps: list[int]
) -> npt.NDArray[np.float64]:
    """Reconstruction level (interval midpoint) of each magnitude; segment i spans
    [bounds[i], bounds[i+1]) in 16 equal intervals of steps[i]."""
    thresholds = np.concatenate(
        [b + s * np.arange(1, 17) for b, s in zip(bounds[:-1], steps, strict=True)]
    ).astype(np.float64)
    levels = np.concatenate([b + s * (np.arange(16) + 0.5) for b, s in zip(bounds[:-1], steps, strict=True)])
    idx = np.minimum(np.searchsorted(thresholds, magnitude, side="right"), len(levels) - 1)
    return levels[idx]


def reference_ulaw(x: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """G.711 Table 2a in the 14-bit domain: segment 0 is [-1, 31) with step 2 (so its first
    level is 0), segment s >= 1 is [2**(s+5) - 33, 2**(s+6) - 33) with step 2**(s+1).
    The 16 -> 14 bit truncation (one's complement for negatives) follows ITU-T G.191."""
    xi = x.astype(np.int64)
    m = np.where(xi < 0, (~xi) >> 2, xi >> 2)
    bounds = [-1] + [2 ** (s + 5) - 33 for s in range(1, 9)]
    steps = [2] + [2 ** (s + 1) for s in range(1, 8)]
    level = _quantise(m, bounds, steps)
    return (np.where(xi < 0, -4, 4) * level).astype(np.int16)


def reference_alaw(x: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """G.711 Table 1a in 12-bit magnitude units: segments 0 and 1 are [0, 16) and [16, 32) with
    step 1, segment s >= 2 is [2**(s+3), 2**(s+4)) with step 2**(s-1); output x16."""
    xi = x.astype(np.int64)
    m = np.where(xi < 0, (~xi) >> 4, xi >> 4)
    bounds = [0, 16] + [2 ** (s + 4) for s in range(1, 8)]
    steps = [1, 1] + [2 ** (s - 1) for s in range(2, 8)]
    level = _quantise(m, bounds, steps)
    return (np.where(xi < 0, -16, 16) * level).astype(np.int16)


@pytest.mark.parametrize(("codec", "reference"), [("PCMU", reference_ulaw), ("PCMA", reference_alaw)])
def test_all_int16_values_quantise_as_the_standard(codec: str, reference: object) -> None:
    out = g711.decode(codec, g711.encode(codec, ALL_INT16))
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, reference(ALL_INT16))  # type: ignore[operator]


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_every_code_round_trips(codec: str) -> None:
    codes = bytes(range(256))
    back = g711.encode(codec, g711.decode(codec, codes))
    mismatched = [c for c in range(256) if back[c] != c]
    if codec == "PCMU":
        # 0x7F is µ-law "negative zero": it decodes to 0, which encodes to 0xFF.
        assert mismatched == [0x7F]
        assert back[0x7F] == 0xFF
    else:
        assert mismatched == []


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_quantiser_is_monotonic_and_odd_symmetric(codec: str) -> None:
    out = g711.decode(codec, g711.encode(codec, ALL_INT16)).astype(np.int32)
    assert np.all(np.diff(out) >= 0)
    # one's-complement symmetry: x and -1 - x map to opposite levels
    x = ALL_INT16.astype(np.int32)
    mirrored = out[(-1 - x) + 32768]
    np.testing.assert_array_equal(out, -mirrored)


def test_known_values() -> None:
    assert g711.decode("PCMU", b"\xff\x00\x7f\x80").tolist() == [0, -32124, 0, 32124]
    assert g711.decode("PCMA", b"\xd5\x55").tolist() == [8, -8]
    assert g711.encode("PCMU", np.array([0], dtype=np.int16)) == b"\xff"
    assert g711.encode("PCMA", np.array([0], dtype=np.int16)) == b"\xd5"
    assert g711.encode("PCMU", np.array([32767, -32768], dtype=np.int16)) == b"\x80\x00"
    assert g711.encode("PCMA", np.array([32767, -32768], dtype=np.int16)) == b"\xaa\x2a"


def test_names_payload_types_and_silence() -> None:
    assert g711.payload_type_for("pcmu") == 0
    assert g711.payload_type_for("PCMA") == 8
    assert g711.codec_for_payload_type(8) == "PCMA"
    assert g711.codec_for_payload_type(0) == "PCMU"
    assert g711.codec_for_payload_type(18) is None
    assert g711.silence("PCMA", 3) == b"\xd5\xd5\xd5"
    assert g711.decode("PCMU", g711.silence("PCMU", 160)).tolist() == [0] * 160
    with pytest.raises(ValueError, match=r"unknown G\.711 codec"):
        g711.encode("G729", np.zeros(1, dtype=np.int16))


def test_encode_accepts_other_integer_types_and_rejects_floats() -> None:
    wide = np.array([40000, -40000, 100], dtype=np.int32)
    assert g711.encode("PCMU", wide) == g711.encode("PCMU", np.array([32767, -32768, 100], dtype=np.int16))
    with pytest.raises(TypeError):
        g711.encode("PCMA", np.array([0.5]))
    assert g711.decode("PCMA", b"").shape == (0,)
