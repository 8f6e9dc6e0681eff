"""T.30 error correction mode: block assembly, and PPR / CTC / EOR / RNR between two engines."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.fax.test_t30 import Faults, Link, config, fcf_of, frames_of, pair, same_pels, synthetic
from ums.fax.t30 import SendEcmFrames
from ums.fax.t30_ecm import FRAMES_PER_BLOCK, BlockAssembler, fcd_frame, rcp_frames, split_blocks
from ums.fax.t30_frames import Fcf, Frame, parse_ctc, parse_pps, ppr_frames
from ums.render.page import FaxPage

# -- block assembly -------------------------------------------------------------------------------------


def test_split_blocks_frame_and_block_sizes() -> None:
    data = bytes(range(256)) * 300  # 76800 octets
    blocks = split_blocks(data, 256)
    assert [len(b) for b in blocks] == [256, 44]
    assert all(len(f) == 256 for b in blocks for f in b)
    assert b"".join(f for b in blocks for f in b) == data
    small = split_blocks(data[:1000], 64)
    assert [len(b) for b in small] == [16]
    assert [len(f) for f in small[0]] == [64] * 15 + [40]  # the last frame of a page may be short
    assert split_blocks(b"", 256) == [[b""]]
    assert len(split_blocks(bytes(64 * FRAMES_PER_BLOCK + 1), 64)) == 2
    with pytest.raises(ValueError):
        split_blocks(data, 128)


def test_fcd_and_rcp_frames() -> None:
    # T.4 Annex A: address, control (not final), FCD = 0110 0000 sent first bit first, frame number, data.
    assert fcd_frame(5, b"\x01\x02") == bytes.fromhex("ff0306050102")
    assert rcp_frames() == [bytes.fromhex("ff1386")] * 3
    with pytest.raises(ValueError):
        fcd_frame(256, b"")
    assert Frame.parse(fcd_frame(255, b"x")).fcf is Fcf.FCD


def test_block_assembler() -> None:
    asm = BlockAssembler()
    assert asm.missing() == []  # the count comes with the first PPS
    asm.add(bytes((0,)) + b"aa")
    asm.add(bytes((2,)) + b"cc")
    asm.count = 4
    assert asm.missing() == [1, 3]
    asm.add(bytes((1,)) + b"bb")
    asm.add(bytes((3,)) + b"d")
    assert asm.missing() == []
    assert asm.data(2) == b"aabbccd"
    asm.reset()
    asm.add(bytes((1,)) + b"bb")
    asm.count = 3
    assert asm.data(2) == b"\0\0bb\0\0"  # after EOR a missing frame becomes zeros


# -- between two engines ------------------------------------------------------------------------------


class BadFrames(Faults):
    """Damage FCD frames by frame number, in the given bursts (0 = first transmission)."""

    def __init__(self, bad: dict[int, set[int]], drop: bool = False) -> None:
        self.bad = bad

    def ecm_frame_bad(self, sender: str, frame: bytes, burst: int, index: int) -> bool:
        return fcf_of(frame) is Fcf.FCD and frame[3] in self.bad.get(burst, set())


def bursts(link: Link) -> list[SendEcmFrames]:
    return [c for _, c in link.caller.commands if isinstance(c, SendEcmFrames)]


def fcd_numbers(c: SendEcmFrames) -> list[int]:
    return [f[3] for f in c.frames if fcf_of(f) is Fcf.FCD]


def dense_page(rows: int = 120, seed: int = 3) -> FaxPage:
    rng = np.random.default_rng(seed)
    return FaxPage.at((rng.random((rows, 1728)) < 0.06).astype(np.uint8), "fine")


def test_corrupted_frames_are_asked_for_and_sent_again() -> None:
    page = dense_page()
    link = pair([page], faults=BadFrames({0: {3, 7, 20}}))
    (got,) = link.answerer.pages
    assert same_pels(got.pels, page.pels) and got.quality == "ecm"
    (ppr,) = frames_of(link.answerer, Fcf.PPR)
    assert ppr_frames(Frame.parse(ppr[1]).fif) == [3, 7, 20]
    first, again = bursts(link)
    assert fcd_numbers(again) == [3, 7, 20]
    assert [fcf_of(f) for f in again.frames[-3:]] == [Fcf.RCP] * 3
    assert again.short_train  # same V.17 rate: short training
    pps = [parse_pps(Frame.parse(f).fif) for _, f in frames_of(link.caller, Fcf.PPS)]
    assert pps[0] == (Fcf.EOP, 0, 0, len(fcd_numbers(first)))
    assert pps[1] == (Fcf.EOP, 0, 0, 3)  # frames in this transmission
    assert link.caller.result is not None and link.caller.result.success


def test_frames_lost_at_the_end_of_a_block_are_found_from_pps() -> None:
    page = dense_page()
    n = len(fcd_numbers(bursts(pair([page]))[0]))
    link = pair([page], faults=BadFrames({0: {n - 2, n - 1}}))
    (ppr,) = frames_of(link.answerer, Fcf.PPR)
    assert ppr_frames(Frame.parse(ppr[1]).fif) == [n - 2, n - 1]
    assert same_pels(link.answerer.pages[0].pels, page.pels)


def test_four_pprs_lead_to_ctc_and_a_lower_rate() -> None:
    page = dense_page()
    link = pair([page], faults=BadFrames({b: {1} for b in range(4)}))
    assert link.answerer.fcfs_sent().count(Fcf.PPR) == 4
    (ctc,) = frames_of(link.caller, Fcf.CTC)
    assert parse_ctc(Frame.parse(ctc[1]).fif) == ("v17", 12000)
    assert link.answerer.fcfs_sent().count(Fcf.CTR) == 1
    sent = bursts(link)
    assert [(b.rate, b.short_train) for b in sent] == [(14400, True)] * 4 + [(12000, False)]
    assert fcd_numbers(sent[-1]) == [1]
    assert same_pels(link.answerer.pages[0].pels, page.pels)
    assert link.caller.result is not None and link.caller.result.success


@pytest.mark.parametrize(("step_down", "rate"), [(True, 12000), (False, 14400)])
def test_after_ctc_both_ends_report_the_rate_in_use(step_down: bool, rate: int) -> None:
    page = dense_page()
    link = pair([page], config(ctc_step_down=step_down), config(), BadFrames({b: {1} for b in range(4)}))
    assert link.answerer.fcfs_sent().count(Fcf.CTR) == 1
    for side in (link.caller, link.answerer):
        # Negotiated again only when CTC changed the rate.
        assert [(n.modem, n.rate) for n in side.negotiated] == [("v17", 14400)] + (
            [("v17", rate)] if step_down else []
        )
        assert side.result is not None and side.result.success
        assert (side.result.modem, side.result.rate) == ("v17", rate)


def test_ctc_then_more_blocks_train_short_at_the_new_rate() -> None:
    rng = np.random.default_rng(8)
    pages = [FaxPage.at((rng.random((120, 1728)) < 0.06).astype(np.uint8), "fine") for _ in range(2)]
    link = pair(pages, faults=BadFrames({b: {0} for b in range(4)}))
    sent = bursts(link)
    assert [(b.rate, b.short_train) for b in sent[4:]] == [(12000, False), (12000, True)]
    for got, want in zip(link.answerer.pages, pages, strict=True):
        assert same_pels(got.pels, want.pels)


def test_eor_at_the_lowest_rate_accepts_the_page_with_errors() -> None:
    page = dense_page(60)
    tx = config(modems=("v27ter",), max_rate=2400)
    link = pair([page], tx, config(), BadFrames({b: {2} for b in range(9)}))
    assert link.answerer.fcfs_sent().count(Fcf.PPR) == 4
    assert Fcf.CTC not in link.caller.fcfs_sent()
    (eor,) = frames_of(link.caller, Fcf.EOR)
    assert Frame.parse(eor[1]).fcf2 is Fcf.EOP
    assert link.answerer.fcfs_sent().count(Fcf.ERR) == 1
    (got,) = link.answerer.pages
    assert got.quality == "ecm-errors" and got.bad_rows > 0
    assert [s.response for s in link.caller.sent] == ["ERR"]
    assert link.caller.result is not None and link.caller.result.success


def test_lost_mcf_after_pps_null_does_not_duplicate_a_block() -> None:
    rng = np.random.default_rng(3)
    page = FaxPage.at((rng.random((200, 1728)) < 0.08).astype(np.uint8), "fine")

    class DropFirstMcf(Faults):
        dropped = False

        def drop_burst(self, sender: str, frames: tuple[bytes, ...], n: int) -> bool:
            if sender == "answerer" and fcf_of(frames[-1]) is Fcf.MCF and not self.dropped:
                self.dropped = True
                return True
            return False

    link = pair([page], config(ecm_frame_size=64), config(), DropFirstMcf())
    pps = [parse_pps(Frame.parse(f).fif) for _, f in frames_of(link.caller, Fcf.PPS)]
    assert pps[0] == pps[1] and pps[0][0] is Fcf.NULL  # PPS-NULL sent twice
    assert same_pels(link.answerer.pages[0].pels, page.pels)


def test_lost_pps_is_repeated() -> None:
    class DropPps(Faults):
        dropped = False

        def drop_burst(self, sender: str, frames: tuple[bytes, ...], n: int) -> bool:
            if fcf_of(frames[-1]) is Fcf.PPS and not self.dropped:
                self.dropped = True
                return True
            return False

    page = dense_page(40)
    link = pair([page], faults=DropPps())
    assert len(frames_of(link.caller, Fcf.PPS)) == 2
    assert same_pels(link.answerer.pages[0].pels, page.pels)


def test_a_missed_burst_is_sent_again_whole() -> None:
    class Deaf(Faults):
        def deaf(self, listener: str, t: float) -> bool:
            return listener == "answerer" and 11.0 < t < 11.6  # the first burst's start

    page = dense_page(40)
    link = pair([page], faults=Deaf())
    first, again = bursts(link)
    assert fcd_numbers(again) == fcd_numbers(first)
    assert same_pels(link.answerer.pages[0].pels, page.pels)


def test_polling_with_ecm_and_ppr() -> None:
    page = dense_page(60)

    class Bad(Faults):
        def ecm_frame_bad(self, sender: str, frame: bytes, burst: int, index: int) -> bool:
            return sender == "answerer" and burst == 0 and index == 2

    link = pair([page], faults=Bad(), polling=True)
    assert frames_of(link.caller, Fcf.PPR)
    assert same_pels(link.caller.pages[0].pels, page.pels)
    assert link.answerer.result is not None and link.answerer.result.success


def test_synthetic_pages_all_codings_over_ecm() -> None:
    pages = [synthetic(40, "fine", s) for s in range(2)]
    for comp in ("mh", "mr", "mmr"):
        link = pair(pages, config(compressions=(comp,)), config(), BadFrames({0: {0}}))
        assert link.answerer.negotiated[0].compression == comp
        for got, want in zip(link.answerer.pages, pages, strict=True):
            assert same_pels(got.pels, want.pels)
