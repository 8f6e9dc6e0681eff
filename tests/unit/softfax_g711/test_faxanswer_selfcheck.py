"""The fax answerer receives what the test fax caller sends: SpanDSP to SpanDSP through both SIP peers.

:mod:`tests.peers.faxcaller` (SpanDSP sending a cropped ITU chart) calls :mod:`tests.peers.faxanswer`
(SpanDSP receiving) over loopback, in real time: G.711 A-law with ECM, and T.38 after the answerer's
re-INVITE; the received page must be the sent page, pel for pel.  Busy and unanswered lines give the
caller 486 and 480.  A raw UDP client checks the answerer's responses with ums's SIP parser (Via
``received``/``rport``, To tag, Contact) and the CANCEL path (200, then 487 to the INVITE).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.peers import faxcaller as fc
from tests.peers import spandsp
from tests.peers import spandsp_fax as sf
from tests.peers.faxanswer import AnsweredCall, AnswererThread, AnswerPlan, FaxAnswerer
from tests.unit.fax.pages import itu_page
from ums.sip.message import Response, parse_message

pytestmark = pytest.mark.skipif(not spandsp.available(), reason="libspandsp2 is not installed")

Page = npt.NDArray[np.uint8]
CSID = "+49 30 123456"


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Page]:
    """The letterhead of ITU chart 1 at standard resolution (260 rows): one short page."""
    page = np.ascontiguousarray(itu_page("itu1")[0:520:2])
    path = tmp_path_factory.mktemp("fax") / "chart.tif"
    sf.write_fax_tiff(path, [page], resolution="standard")
    return path, page


Spec = tuple[list[AnswerPlan], Path, dict[str, object]]
Outcome = tuple[fc.FaxCallResult, AnsweredCall]


def _calls(specs: dict[str, Spec]) -> dict[str, Outcome]:
    """Calls from the test caller (one thread each) to answerers of their own, all at the same time."""

    async def one(plans: list[AnswerPlan], tiff: Path, kwargs: dict[str, object]) -> Outcome:
        answerer = FaxAnswerer(plans=plans, csid=CSID)
        port = await answerer.start()
        try:
            result = await asyncio.to_thread(
                fc.call_fax,
                f"127.0.0.1:{port}",
                "4930777",
                tiff,
                **kwargs,  # type: ignore[arg-type]
            )
            (answered,) = await answerer.wait_calls(1, 15)
            return result, answered
        finally:
            await answerer.stop()

    async def main() -> dict[str, Outcome]:
        outcomes = await asyncio.gather(*(one(*spec) for spec in specs.values()))
        return dict(zip(specs, outcomes, strict=True))

    return asyncio.run(main())


@pytest.fixture(scope="module")
def fax_calls(chart: tuple[Path, Page], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """The real-time calls of this file, run side by side to keep the file short."""
    tiff, page = chart
    two = sf.write_fax_tiff(
        tmp_path_factory.mktemp("fax") / "two.tif", [page, page[::-1].copy()], resolution="standard"
    )
    return _calls(
        {
            "g711": ([AnswerPlan("fax", ecm=True)], tiff, {"codec": "PCMA", "ecm": True, "max_seconds": 60}),
            "t38": (
                [AnswerPlan("fax", t38="reinvite", reinvite_after=1.0)],
                tiff,
                {"codec": "PCMU", "t38": "none", "max_seconds": 60},
            ),
            "drop": ([AnswerPlan("fax", hangup_after_page=1)], two, {"codec": "PCMA", "max_seconds": 60}),
            "voice": ([AnswerPlan("voice", voice_seconds=1.5)], tiff, {"max_seconds": 20}),
        }
    )


def _same_page(answered: AnsweredCall, page: Page) -> None:
    assert len(answered.pages) == 1, answered.describe()
    (got,) = answered.pages
    assert got.shape == page.shape, answered.describe()
    assert np.array_equal(got, page), f"{int((got != page).sum())} pels differ"


def test_g711_pcma_ecm(fax_calls: dict[str, Outcome], chart: tuple[Path, Page]) -> None:
    result, answered = fax_calls["g711"]
    assert result.ok, result.describe()
    assert answered.ok, answered.describe()
    assert (answered.status, answered.transport, answered.codec) == (200, "g711", "PCMA")
    assert answered.user == "4930777" and answered.caller == "+4930555"
    assert answered.fax is not None and answered.fax.ecm and answered.fax.pages_rx == 1
    assert result.fax is not None and result.fax.remote_ident == CSID
    _same_page(answered, chart[1])
    assert answered.ended_by == "remote-bye" and result.ended_by == "local-bye", answered.describe()
    names = [w for _, w in answered.events]
    for what in ("200", "ack", "phase-b", "cfr", "page 1", "phase-e", "bye-received"):
        assert what in names, answered.describe()
    assert answered.stats.rtp_rx > 0 and answered.stats.underruns <= 2, answered.describe()


def test_t38_after_our_reinvite(fax_calls: dict[str, Outcome], chart: tuple[Path, Page]) -> None:
    result, answered = fax_calls["t38"]
    assert result.ok, result.describe()
    assert answered.ok, answered.describe()
    assert (answered.transport, answered.t38_switch, answered.codec) == ("t38", "local", "PCMU")
    assert result.t38 and result.t38_switch == "server", result.describe()
    assert answered.stats.udptl_rx > 0 and answered.stats.ifp_lost == 0, answered.describe()
    _same_page(answered, chart[1])


def test_line_dropped_after_first_page(fax_calls: dict[str, Outcome], chart: tuple[Path, Page]) -> None:
    result, answered = fax_calls["drop"]
    assert not result.ok and result.ended_by == "remote-bye", result.describe()
    assert result.fax is not None and result.fax.pages_tx == 1, result.describe()
    assert answered.ended_by == "local-bye" and answered.hangup_reason == "page 1", answered.describe()
    assert answered.bye_status == 200, answered.describe()
    _same_page(answered, chart[1])


def test_voice_line(fax_calls: dict[str, Outcome]) -> None:
    result, answered = fax_calls["voice"]
    assert result.answered and not result.ok and result.ended_by == "remote-bye", result.describe()
    assert answered.hangup_reason == "voice" and answered.fax is None, answered.describe()
    assert answered.stats.rtp_rx > 0 and answered.pages == []


def _call(plans: list[AnswerPlan], tiff: Path, **kwargs: object) -> Outcome:
    return _calls({"call": (plans, tiff, kwargs)})["call"]


def test_busy(chart: tuple[Path, Page]) -> None:
    result, answered = _call([AnswerPlan("busy")], chart[0], max_seconds=5)
    assert result.status == 486 and not result.answered, result.describe()
    assert answered.status == 486 and answered.ended_by == "rejected", answered.describe()
    assert answered.at("ack") is not None, answered.describe()
    assert answered.fax is None and answered.pages == []


def test_no_answer_then_480(chart: tuple[Path, Page]) -> None:
    result, answered = _call([AnswerPlan("no_answer", ring_seconds=1.0)], chart[0], max_seconds=5)
    assert result.status == 480 and not result.answered, result.describe()
    assert answered.status == 480, answered.describe()
    ringing, final = answered.at("180"), answered.at("480")
    assert ringing is not None and final is not None and final - ringing >= 0.9, answered.describe()
    assert answered.at("ack") is not None, answered.describe()


def test_reject_from_a_thread(chart: tuple[Path, Page]) -> None:
    """The synchronous wrapper: the answerer on its own loop, the caller on the test's thread."""
    with AnswererThread(plans=[AnswerPlan("reject", code=603)]) as line:
        result = fc.call_fax(f"127.0.0.1:{line.port}", "555", chart[0], max_seconds=5)
        (answered,) = line.wait_calls(1, 5)
    assert result.status == 603 and answered.status == 603 and answered.user == "555", answered.describe()


# -- SIP only: what ums's SIP core reads of our responses, and CANCEL --------------------------------
def _request(method: str, port: int, cseq: int, branch: str, to_tag: str = "") -> bytes:
    to = "<sip:200@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:200@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.9.9.9:5999;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:ums@127.0.0.1>;tag=abc\r\n"
        f"To: {to}\r\nCall-ID: cancel-test@ums\r\nCSeq: {cseq} {method}\r\n"
        "Contact: <sip:ums@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _responses(sock: socket.socket, n: int) -> list[Response]:
    out: list[Response] = []
    while len(out) < n:
        msg = parse_message(sock.recv(65535))
        assert isinstance(msg, Response)
        out.append(msg)
    return out


def test_sip_responses_and_cancel() -> None:
    async def main() -> AnsweredCall:
        answerer = FaxAnswerer(plans=[AnswerPlan("no_answer")])
        port = await answerer.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        sock.bind(("127.0.0.1", 0))
        here = sock.getsockname()[1]
        try:

            def client() -> None:
                sock.sendto(_request("OPTIONS", port, 1, "z9hG4bKopt"), ("127.0.0.1", port))
                (ok,) = _responses(sock, 1)
                assert ok.status == 200 and "INVITE" in (ok.headers.get("Allow") or "")
                sock.sendto(_request("INVITE", port, 1, "z9hG4bKinv"), ("127.0.0.1", port))
                trying, ringing = _responses(sock, 2)
                assert (trying.status, ringing.status) == (100, 180)
                via = ringing.vias[0]
                assert f"rport={here}" in via and "received=127.0.0.1" in via and "branch=z9hG4bKinv" in via
                assert "tag=" in (ringing.headers.get("To") or "")
                assert f"@127.0.0.1:{port}>" in (ringing.headers.get("Contact") or "")
                sock.sendto(_request("CANCEL", port, 1, "z9hG4bKinv"), ("127.0.0.1", port))
                got = {r.cseq[1]: r.status for r in _responses(sock, 2)}
                assert got == {"CANCEL": 200, "INVITE": 487}
                sock.sendto(_request("ACK", port, 1, "z9hG4bKinv", to_tag="x"), ("127.0.0.1", port))

            await asyncio.to_thread(client)
            (answered,) = await answerer.wait_calls(1, 5)
            return answered
        finally:
            sock.close()
            await answerer.stop()

    answered = asyncio.run(main())
    assert answered.status == 487 and answered.ended_by == "cancel", answered.describe()
    assert [w for _, w in answered.events][:4] == ["invite", "180", "cancel", "487"], answered.describe()
