"""T.30 error correction mode (ECM): partial pages of numbered frames (T.4 Annex A, T.30 Annex A).

What it does
------------
* Transmit: :func:`split_blocks` cuts a coded page into partial pages ("blocks") of at most 256
  frames of 64 or 256 octets; :func:`fcd_frame` and :func:`rcp_frames` build the HDLC frames sent
  with the image modem (facsimile coded data, then return-to-control-for-partial-page three times).
* Receive: :class:`BlockAssembler` collects the FCD frames of one block by number, says which are
  still missing (for the PPR frame map) and returns the block's data once complete.

How it works
------------
An FCD frame is address, control, FCF ``FCD``, the frame number (0..255 within the block, T.4
Annex A) and the data octets; every frame but the last one of a page is full size.  The receiver
learns the number of frames in a block from the first PPS for that block.
"""

from __future__ import annotations

from typing import Final

from ums.fax.t30_frames import Fcf, Frame

__all__ = ["FRAMES_PER_BLOCK", "RCP_REPEATS", "BlockAssembler", "fcd_frame", "rcp_frames", "split_blocks"]

FRAMES_PER_BLOCK: Final = 256
"""T.4 Annex A: a partial page is at most 256 frames."""
RCP_REPEATS: Final = 3
"""T.4 Annex A: RCP is sent three times after the last FCD frame of a partial page."""


def split_blocks(data: bytes, frame_size: int) -> list[list[bytes]]:
    """A coded page as blocks of frames' data (at least one block with one frame)."""
    if frame_size not in (64, 256):
        raise ValueError("ECM frame size must be 64 or 256 octets")
    chunks = [data[i : i + frame_size] for i in range(0, len(data), frame_size)] or [b""]
    return [chunks[i : i + FRAMES_PER_BLOCK] for i in range(0, len(chunks), FRAMES_PER_BLOCK)]


def fcd_frame(number: int, payload: bytes) -> bytes:
    """One facsimile coded data frame (T.4 Annex A)."""
    if not 0 <= number < FRAMES_PER_BLOCK:
        raise ValueError("frame number must be 0..255")
    return Frame(Fcf.FCD, bytes((number,)) + payload, final=False).to_bytes()


def rcp_frames() -> list[bytes]:
    """The three RCP frames that end a partial page (T.4 Annex A)."""
    return [Frame(Fcf.RCP, b"", final=True).to_bytes()] * RCP_REPEATS


class BlockAssembler:
    """The frames of one partial page as they arrive, first transmission and retransmissions."""

    def __init__(self) -> None:
        self.frames: dict[int, bytes] = {}
        self.count: int | None = None
        """Frames in the block, from the first PPS; None until then."""
        self.received_frames = 0
        self.rcp_seen = False

    def reset(self) -> None:
        self.frames.clear()
        self.count = None
        self.rcp_seen = False

    def add(self, fif: bytes) -> None:
        """Store an FCD frame's FIF (frame number + data); a repeat of a frame replaces it."""
        if not fif:
            return
        self.frames[fif[0]] = bytes(fif[1:])
        self.received_frames += 1

    def missing(self) -> list[int]:
        """Frame numbers below ``count`` not received correctly."""
        if self.count is None:
            return []
        return [n for n in range(self.count) if n not in self.frames]

    def data(self, frame_size: int) -> bytes:
        """The block's data in frame order; a missing frame (after EOR) becomes ``frame_size`` zeros."""
        count = self.count if self.count is not None else (max(self.frames) + 1 if self.frames else 0)
        return b"".join(self.frames.get(n, bytes(frame_size)) for n in range(count))
