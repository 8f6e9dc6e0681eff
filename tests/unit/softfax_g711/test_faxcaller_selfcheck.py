"""The fax caller's media endpoints work on their own: SpanDSP to SpanDSP through loopback sockets.

The caller side of :mod:`tests.peers.faxcaller` (SpanDSP's fax machine behind our RTP endpoint, or its
T.38 terminal behind our UDPTL endpoint) sends one page to a SpanDSP answerer behind a second endpoint
of the same kind, over real UDP sockets with the endpoint's own pacing, jitter FIFO and UDPTL framing.
The clock runs several times faster than real time to keep the file short; the received page must be
the sent page, pel for pel.  The SIP half is covered by a tiny UAS that answers, re-INVITEs to T.38
and checks the caller follows.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import faxcaller as fc
from tests.peers import spandsp
from tests.peers import spandsp_fax as sf

pytestmark = pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")

WIDTH = 1728
SPEED = 4.0


def text_page(rows: int = 160, seed: int = 3) -> npt.NDArray[np.uint8]:
    """A short standard-resolution page of text-like blocks (seeded)."""
    rng = np.random.default_rng(seed)
    page = np.zeros((rows, WIDTH), np.uint8)
    for top in range(12, rows - 12, 16):
        x = 100
        while x < WIDTH - 150:
            word = int(rng.integers(3, 9))
            for _ in range(word):
                glyph = rng.random((9, 7)) < 0.45
                page[top : top + 9, x : x + 7] = glyph
                x += 9
            x += 12
    page[:, 0] = 1
    return page


@pytest.fixture(scope="module")
def tiff(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, npt.NDArray[np.uint8]]:
    page = text_page()
    path = tmp_path_factory.mktemp("fax") / "page.tif"
    sf.write_fax_tiff(path, [page], resolution="standard")
    return path, page


def _check(rx_tiff: Path, page: npt.NDArray[np.uint8], a: sf.T30Peer, b: sf.T30Peer) -> None:
    assert a.result.ok, a.result.completion_text
    assert b.result.ok, b.result.completion_text
    assert (a.result.pages_tx, b.result.pages_rx) == (1, 1)
    (got,) = sf.read_fax_tiff(rx_tiff)
    assert got.shape == page.shape
    assert np.array_equal(got, page), f"{int((got != page).sum())} pels differ"


def test_g711_rtp_pair(tiff: tuple[Path, npt.NDArray[np.uint8]], tmp_path: Path) -> None:
    src, page = tiff
    rx_tiff = tmp_path / "rx.tif"
    a = fc.RtpFax(sf.SpanFax(True, transmit_tiff=src, modems=("v17",)), "PCMA")
    b = fc.RtpFax(sf.SpanFax(False, receive_tiff=rx_tiff), "PCMA")
    seconds = fc.run_media_pair(a, b, max_seconds=90, speed=SPEED)
    _check(rx_tiff, page, a.fax, b.fax)
    assert a.fax.result.bit_rate == 14400
    assert a.stats.rtp_tx == pytest.approx(seconds * 50, abs=5)
    assert a.stats.rtp_rx > 0.9 * a.stats.rtp_tx


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_t38_udptl_pair(tiff: tuple[Path, npt.NDArray[np.uint8]], tmp_path: Path, loss: float) -> None:
    src, page = tiff
    rx_tiff = tmp_path / "rx.tif"
    a = fc.UdptlFax(sf.SpanT38(True, transmit_tiff=src), depth=3, loss_tx=loss, loss_rx=loss, seed=5)
    b = fc.UdptlFax(sf.SpanT38(False, receive_tiff=rx_tiff), depth=3)
    fc.run_media_pair(a, b, max_seconds=90, speed=SPEED)
    _check(rx_tiff, page, a.fax, b.fax)
    if loss:
        assert a.stats.udptl_dropped_tx > 0 and a.stats.udptl_dropped_rx > 0
        assert b.stats.ifp_recovered > 0
        assert b.stats.ifp_lost == 0 and a.stats.ifp_lost == 0


# -- SIP: a tiny UAS that answers with audio, then re-INVITEs to T.38 --------------------------------
class _Uas:
    """Answers the INVITE (audio), re-INVITEs to ``m=image`` and answers BYE; logs what it saw."""

    def __init__(self) -> None:
        self.port = 0
        self.seen: list[str] = []
        self.caller_image: fc.SdpMedia | None = None
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        udptl = await fc._bind(lambda d, a: None)
        rtp = await fc._bind(lambda d, a: None)
        peer: dict[str, object] = {}

        def on_sip(data: bytes, addr: tuple[str, int]) -> None:
            msg = fc.SipMessage.parse(data)
            self.seen.append(msg.first)
            if msg.is_response:
                if msg.cseq[1] == "INVITE" and msg.status == 200:
                    images = [m for m in fc.parse_sdp(msg.body) if m.media == "image"]
                    self.caller_image = images[0] if images else None
                    sip.send(_ack(msg, addr), addr)
                return
            if msg.method == "INVITE":
                peer["invite"], peer["addr"] = msg, addr
                sdp = _sdp("audio", rtp.port)
                sip.send(_resp(msg, 200, "OK", sdp), addr)
                loop.call_later(0.3, reinvite)
            elif msg.method == "BYE":
                sip.send(_resp(msg, 200, "OK"), addr)
                self.stop.set()

        def reinvite() -> None:
            inv = peer["invite"]
            assert isinstance(inv, fc.SipMessage)
            addr = peer["addr"]
            assert isinstance(addr, tuple)
            frm, to = inv.get("to") + ";tag=uas1", inv.get("from")
            body = _sdp("image", udptl.port)
            req = (
                f"INVITE sip:fax@127.0.0.1:{addr[1]} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sip.port};"
                f"branch=z9hG4bKre1\r\nFrom: {frm}\r\nTo: {to}\r\nCall-ID: {inv.get('call-id')}\r\n"
                f"CSeq: 1 INVITE\r\nContact: <sip:uas@127.0.0.1:{sip.port}>\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            sip.send(req, addr)

        sip = await fc._bind(on_sip)
        self.port = sip.port
        self.ready.set()
        while not self.stop.is_set():
            await asyncio.sleep(0.05)
        for s in (sip, udptl, rtp):
            s.close()


def _sdp(media: str, port: int) -> bytes:
    m = (
        f"m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000"
        if media == "audio"
        else f"m=image {port} udptl t38"
    )
    extra = "\r\na=T38FaxVersion:0\r\na=T38FaxUdpEC:t38UDPRedundancy" if media == "image" else ""
    return f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{m}{extra}\r\n".encode()


def _resp(req: fc.SipMessage, status: int, reason: str, body: bytes = b"") -> bytes:
    head = [f"SIP/2.0 {status} {reason}", *(f"Via: {v}" for v in req.get_all("via"))]
    head += [f"From: {req.get('from')}", f"To: {req.get('to')};tag=uas1", f"Call-ID: {req.get('call-id')}"]
    head += [f"CSeq: {req.get('cseq')}", "Contact: <sip:uas@127.0.0.1>"]
    if body:
        head.append("Content-Type: application/sdp")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _ack(resp: fc.SipMessage, addr: tuple[str, int]) -> bytes:
    return (
        f"ACK sip:fax@127.0.0.1:{addr[1]} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKack\r\n"
        f"From: {resp.get('from')}\r\nTo: {resp.get('to')}\r\nCall-ID: {resp.get('call-id')}\r\n"
        f"CSeq: {resp.cseq[0]} ACK\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_sip_follows_the_server_reinvite(tiff: tuple[Path, npt.NDArray[np.uint8]]) -> None:
    """The caller answers the UAS's re-INVITE with m=image and then speaks UDPTL (no fax at the far
    end, so the call ends on ``max_seconds`` with a BYE)."""
    src, _ = tiff
    uas = _Uas()
    thread = threading.Thread(target=uas.run, daemon=True)
    thread.start()
    assert uas.ready.wait(5)
    result = fc.call_fax(f"127.0.0.1:{uas.port}", "200", src, t38="none", max_seconds=1.5)
    uas.stop.set()
    thread.join(5)
    assert result.answered and result.status == 200, result.describe()
    assert result.t38 and result.t38_switch == "server", result.describe()
    assert uas.caller_image is not None and uas.caller_image.port > 0, uas.seen
    assert result.stats.udptl_tx > 0, result.describe()
    assert result.ended_by == "timeout", result.describe()
    assert any(line.startswith("BYE ") for line in uas.seen), uas.seen
    assert any(line.startswith("ACK ") for line in uas.seen), uas.seen
