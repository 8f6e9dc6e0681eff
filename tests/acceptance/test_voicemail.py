"""Voicemail acceptance tests: a SIPp caller leaves a message, an SMTP sink receives the e-mail.

What it does
------------
Covers the whole path of issue 3 against ``ums serve`` on loopback: the caller hears the greeting
and the 1000 Hz beep, speaks about 11 s of stored speech (``testdata/audio``), hangs up, and the
aiosmtpd sink gets one e-mail for the mailbox owner whose WAV matches what was said (correlation
>= 0.9, length within 100 ms) and whose subject names the caller from the directory.  Also: ``#``
and the silence timeout end the message, a 1 s message is dropped, a smarthost that is down
delays the mail but does not lose it, ``kill -9`` between recording and delivery delivers once
after the restart, and the same flow with Redis and a separate ``ums worker`` process.

How it works
------------
SIPp (``vm_uac.xml``) does the signalling; the media is a :class:`tests.peers.rtppeer.RtpPeer` on
the port the SDP offer names, so the test hears ums in real time: it sends silence until it has
heard the beep end, then the speech, then tells SIPp to hang up (``sip_trigger``).  "What was
sent after the beep" is the peer's send timeline from that moment to its last packet.  The sink
(``tests.peers.smtpsink``) is a separate process so it can be stopped and started.
"""

from __future__ import annotations

import io
import re
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.acceptance.conftest import require
from tests.peers import sipp
from tests.peers.audio import best_correlation
from tests.peers.ports import free_port
from tests.peers.procs import PeerError, wait_until
from tests.peers.redis import RedisServer
from tests.peers.rtppeer import RtpPeer, find_tone, sip_trigger, speech
from tests.peers.smtpsink import Mail, SmtpSink
from tests.peers.ums import LogEvent, UmsServer, UmsWorker

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(90)]

HOST = "127.0.0.1"
RATE = 8000
OWNER = "alice@example.com"
CALLER = "+4930555"
CALLER_NAME = "Jane Doe"
BEEP_HZ = 1000.0
MIN_CORRELATION = 0.9
DURATION_TOLERANCE = 0.1  # seconds
SPEECH = speech()
StartUms = Callable[..., UmsServer]


# -- the caller ----------------------------------------------------------------------------------------
class VoicemailCaller:
    """SIPp signalling (``vm_uac.xml``) plus a test RTP peer as the caller's phone."""

    def __init__(
        self,
        run_dir: Path,
        ums_address: str,
        *,
        name: str = "uac",
        number: str = "100",
        caller: str = CALLER,
        hold_s: float = 60.0,
        send_before_beep: bool = True,
    ) -> None:
        self.run_dir = run_dir
        # send_before_beep=False: no RTP at all until the beep has ended (silence suppression)
        self.peer = RtpPeer(fill=send_before_beep)
        self.sipp_port = free_port()
        self.mark: int | None = None  # the peer's send position when the beep end was heard
        self.beep: tuple[int, int] | None = None
        self.call_id = ""
        self.run = sipp.start(
            "vm_uac",
            run_dir,
            name,
            remote=ums_address,
            local_port=self.sipp_port,
            service=number,
            calls=1,
            variables={"rtp_port": self.peer.port, "caller": caller},
            timeout_s=hold_s + 30,
            extra=["-recv_timeout", str(int(hold_s * 1000))],
        )
        self.peer.start()

    def wait_answered(self, timeout: float = 10.0) -> str:
        line = self.run.wait_log("answered", timeout=timeout)[0]
        self.call_id = line.split("call_id=", 1)[1].split()[0]
        return self.call_id

    def wait_beep_end(self, timeout: float = 15.0) -> tuple[int, int]:
        """Wait until the beep has been heard and has ended; remember the send position then."""

        def heard() -> bool:
            audio = self.peer.audio()
            found = find_tone(audio, BEEP_HZ, min_seconds=0.2)
            if found is not None and found[1] <= len(audio) - 2 * 160:
                self.mark = self.peer.sent_samples
                self.beep = found
                return True
            if self.run.returncode is not None or not self.run.proc.alive():
                raise PeerError(f"the caller's SIPp ended before the beep\n{self.run.describe()}")
            return False

        wait_until(heard, timeout, 0.01, "the beep to be heard and to end")
        assert self.beep is not None
        return self.beep

    def say(self, pcm: np.ndarray, then_silence: bool = False) -> None:
        """Queue audio; unless ``then_silence``, the peer stops sending when it is done."""
        self.peer.play(pcm)
        self.peer.set_fill(then_silence)

    def finish(self, timeout: float = 30.0) -> int:
        """Wait until everything queued was sent; return the samples sent since the beep end."""
        end = self.peer.wait_idle(timeout)
        assert self.mark is not None
        return end - self.mark

    def hang_up(self) -> None:
        sip_trigger(HOST, self.sipp_port, self.call_id)

    def wait_ended(self, timeout: float = 20.0) -> int:
        rc = self.run.wait(timeout)
        return rc

    def ended_by(self) -> str:
        """``remote-bye`` (ums hung up) or ``local-bye`` (the caller did)."""
        lines = self.run.log_lines("-bye")
        return lines[-1].split()[0] if lines else ""

    def close(self) -> None:
        self.peer.stop()
        self.run.stop()


def leave_message(
    run_dir: Path, ums: UmsServer, pcm: np.ndarray, name: str = "uac"
) -> tuple[VoicemailCaller, int]:
    """A complete call: wait for the beep, say ``pcm``, hang up.  Returns the caller and the
    number of samples sent after the beep."""
    caller = VoicemailCaller(run_dir, ums.address, name=name)
    try:
        caller.wait_answered()
        caller.wait_beep_end()
        caller.say(pcm)
        sent = caller.finish()
        caller.hang_up()
        rc = caller.wait_ended()
        assert rc == 0, caller.run.describe()
    finally:
        caller.close()
    return caller, sent


# -- checks ------------------------------------------------------------------------------------------
def wav_of(mail: Mail) -> tuple[np.ndarray, str]:
    wavs = [a for a in mail.attachments() if a.filename.lower().endswith(".wav")]
    assert len(wavs) == 1, [(a.filename, a.content_type) for a in mail.attachments()]
    att = wavs[0]
    assert att.filename.startswith("voicemail-"), att.filename
    with wave.open(io.BytesIO(att.data), "rb") as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1), w.getparams()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    return pcm, att.filename


def check_mail(mail: Mail, ref: np.ndarray, expected_samples: int | None) -> np.ndarray:
    """The e-mail for one voicemail: owner, kind, subject, WAV matching ``ref``."""
    assert OWNER in (",".join(mail.envelope_to) + (mail.header("To") or "")), (
        mail.envelope_to,
        mail.header("To"),
    )
    assert mail.header("X-UMS-Kind") == "voice", mail.header("X-UMS-Kind")
    assert mail.message_id.startswith("<") and "@" in mail.message_id, mail.message_id
    pcm, _ = wav_of(mail)
    seconds = len(pcm) / RATE
    subject = mail.subject
    m = re.match(r"Voicemail from (.+) \(([^)]*)\), (\d+):(\d\d)$", subject)
    assert m, subject
    assert m.group(1) == CALLER_NAME, subject
    assert re.sub(r"\D", "", m.group(2)) == re.sub(r"\D", "", CALLER), subject
    assert abs(int(m.group(3)) * 60 + int(m.group(4)) - seconds) <= 1.0, (subject, seconds)
    if expected_samples is not None:
        diff = (len(pcm) - expected_samples) / RATE
        assert abs(diff) <= DURATION_TOLERANCE, (
            f"recording {seconds:.3f} s, sent after the beep {expected_samples / RATE:.3f} s"
        )
    corr, lag = best_correlation(ref, pcm, max_lag=RATE)
    assert corr >= MIN_CORRELATION, f"correlation {corr:.3f} at lag {lag} ({seconds:.3f} s recorded)"
    return pcm


def recorded(ums: UmsServer, timeout: float = 10.0, **match: str) -> LogEvent:
    return ums.wait_event("voicemail.recorded", timeout, 1, **match)


@pytest.fixture
def sink(run_dir: Path) -> Iterator[SmtpSink]:
    s = SmtpSink(run_dir, free_port())
    yield s
    s.stop()


def vm_config(sink: SmtpSink, **kwargs: object) -> dict[str, object]:
    mail: dict[str, object] = {"smarthost": sink.address, "retry_first": 1, "retry_max": 2}
    extra = kwargs.pop("mail", {})
    assert isinstance(extra, dict)
    mail.update(extra)
    cfg: dict[str, object] = {"mail": mail, "directory_entries": {CALLER: CALLER_NAME}}
    cfg.update(kwargs)
    return cfg


# -- 1. end to end --------------------------------------------------------------------------------------
def test_message_reaches_the_owner_by_smtp(run_dir: Path, start_ums: StartUms, sink: SmtpSink) -> None:
    require("sipp")
    sink.start()
    ums = start_ums(**vm_config(sink))
    caller = VoicemailCaller(run_dir, ums.address)
    try:
        caller.wait_answered()
        begin, end = caller.wait_beep_end()
        caller.say(SPEECH)
        sent = caller.finish()
        caller.hang_up()
        assert caller.wait_ended() == 0, caller.run.describe()
        heard = caller.peer.audio()
    finally:
        caller.close()

    # the greeting: spoken audio before the beep
    greeting = heard[:begin].astype(np.float64)
    frames = greeting[: len(greeting) // 160 * 160].reshape(-1, 160)
    active = np.sqrt(np.mean(frames**2, axis=1)) > 200.0
    assert active.sum() * 0.02 >= 1.0, f"only {active.sum() * 0.02:.2f} s of greeting heard"
    # the beep: about 0.4 s, spectral peak at 1000 Hz
    beep = heard[begin:end].astype(np.float64)
    assert 0.3 <= len(beep) / RATE <= 0.5, f"beep {len(beep) / RATE:.2f} s"
    spec = np.abs(np.fft.rfft(beep * np.hanning(len(beep))))
    peak = float(np.fft.rfftfreq(len(beep), 1 / RATE)[int(np.argmax(spec))])
    assert abs(peak - BEEP_HZ) <= 15.0, f"beep peak at {peak:.1f} Hz"

    ev = recorded(ums, reason="hangup")
    assert ev.get("number") == "100", ev.line
    (mail,) = sink.wait_messages(1, timeout=20)
    pcm = check_mail(mail, SPEECH, sent)
    assert abs(float(ev["duration"]) - len(pcm) / RATE) <= 0.05, ev.line
    delivered = ums.wait_event("pipeline.delivered", timeout=5, id=ev["id"])
    assert delivered.get("via") == "smtp", delivered.line
    time.sleep(1.0)  # a second copy would come within the retry interval
    assert len(sink.paths()) == 1


def test_caller_silent_until_the_beep_is_recorded_from_the_beep(
    run_dir: Path, start_ums: StartUms, sink: SmtpSink
) -> None:
    """A phone with silence suppression sends no RTP during the greeting: its first packet comes
    after the beep, and the message still starts with its first word."""
    require("sipp")
    sink.start()
    ums = start_ums(**vm_config(sink))
    part = SPEECH[: 5 * RATE]
    caller = VoicemailCaller(run_dir, ums.address, send_before_beep=False)
    try:
        caller.wait_answered()
        caller.wait_beep_end()
        caller.say(part)
        sent = caller.finish()
        caller.hang_up()
        assert caller.wait_ended() == 0, caller.run.describe()
    finally:
        caller.close()
    recorded(ums, reason="hangup")
    (mail,) = sink.wait_messages(1, timeout=20)
    check_mail(mail, part, sent)


# -- 2. how a message ends -------------------------------------------------------------------------------
def test_pound_ends_the_recording(run_dir: Path, start_ums: StartUms, sink: SmtpSink) -> None:
    require("sipp")
    sink.start()
    ums = start_ums(**vm_config(sink))
    part, tail = SPEECH[: 5 * RATE], SPEECH[5 * RATE :]
    caller = VoicemailCaller(run_dir, ums.address)
    try:
        caller.wait_answered()
        caller.wait_beep_end()
        caller.say(part, then_silence=True)
        before_pound = caller.finish()
        caller.peer.digit("#", duration_ms=100)
        caller.say(tail, then_silence=True)  # still talking after '#': must not be recorded
        assert caller.wait_ended(15) == 0, caller.run.describe()
        assert caller.ended_by() == "remote-bye", caller.run.log_lines()
    finally:
        caller.close()
    ev = recorded(ums, reason="pound")
    (mail,) = sink.wait_messages(1, timeout=20)
    pcm = check_mail(mail, part, None)
    seconds = len(pcm) / RATE
    # '#' arrived after `before_pound` samples; the recording may lose a short trim before it
    assert before_pound / RATE - 0.4 <= seconds <= before_pound / RATE + DURATION_TOLERANCE, (
        seconds,
        ev.line,
    )
    corr_tail, _ = best_correlation(tail[: 2 * RATE], pcm, max_lag=len(pcm), min_overlap=0.25)
    assert corr_tail < 0.5, f"the speech after '#' is in the message (correlation {corr_tail:.2f})"


def test_silence_timeout_ends_the_recording(run_dir: Path, start_ums: StartUms, sink: SmtpSink) -> None:
    require("sipp")
    sink.start()
    ums = start_ums(**vm_config(sink, voicemail={"silence_timeout": 2}))
    part = SPEECH[: 4 * RATE]
    caller = VoicemailCaller(run_dir, ums.address)
    try:
        caller.wait_answered()
        caller.wait_beep_end()
        caller.say(part, then_silence=True)
        spoken = caller.finish()
        t0 = time.monotonic()
        assert caller.wait_ended(15) == 0, caller.run.describe()
        waited = time.monotonic() - t0
        assert caller.ended_by() == "remote-bye", caller.run.log_lines()
    finally:
        caller.close()
    # 2 s of silence, then the goodbye prompt (~1.75 s), then BYE
    assert 1.5 <= waited <= 6.0, f"ums hung up {waited:.1f} s after the caller went quiet"
    recorded(ums, reason="silence")
    (mail,) = sink.wait_messages(1, timeout=20)
    pcm = check_mail(mail, part, None)
    seconds = len(pcm) / RATE
    assert spoken / RATE - 0.3 <= seconds <= spoken / RATE + 0.5, (
        f"{seconds:.2f} s recorded for {spoken / RATE:.2f} s"
    )


def test_one_second_message_is_dropped(run_dir: Path, start_ums: StartUms, sink: SmtpSink) -> None:
    require("sipp")
    sink.start()
    ums = start_ums(**vm_config(sink))
    leave_message(run_dir, ums, SPEECH[:RATE])
    ev = ums.wait_event("voicemail.discarded", timeout=10)
    assert ev.get("reason") in ("too-short", "no-speech"), ev.line
    time.sleep(2.0)  # what the pipeline would need to deliver
    assert not ums.events("voicemail.recorded"), ums.log_tail()
    assert not sink.paths()


# -- 3. delivery faults ----------------------------------------------------------------------------------
def test_smarthost_down_then_back(run_dir: Path, start_ums: StartUms, sink: SmtpSink) -> None:
    require("sipp")
    ums = start_ums(**vm_config(sink))  # the sink is not running yet: connection refused
    leave_message(run_dir, ums, SPEECH[: 3 * RATE])
    ev = recorded(ums)
    time.sleep(3.0)  # at least two attempts at retry_first = 1 s
    assert not ums.events("pipeline.delivered"), ums.log_tail()
    sink.start()
    (mail,) = sink.wait_messages(1, timeout=20)
    check_mail(mail, SPEECH[: 3 * RATE], None)
    ums.wait_event("pipeline.delivered", timeout=5, id=ev["id"])
    time.sleep(2.0)
    assert len(sink.paths()) == 1


def test_kill_before_delivery_delivers_once_after_restart(
    run_dir: Path, start_ums: StartUms, sink: SmtpSink
) -> None:
    require("sipp")
    sink.start()
    ums = start_ums(**vm_config(sink, pipeline={"workers": 0}))  # nothing delivers
    leave_message(run_dir, ums, SPEECH[: 3 * RATE])
    ev = recorded(ums)
    ums.kill()
    assert not sink.paths()

    again = UmsServer(run_dir / "ums-restarted", replace(ums.config, pipeline={"workers": 1}))
    try:
        again.start()
        (mail,) = sink.wait_messages(1, timeout=20)
        check_mail(mail, SPEECH[: 3 * RATE], None)
        delivered = again.wait_event("pipeline.delivered", timeout=5, id=ev["id"])
        assert delivered.get("via") == "smtp", delivered.line
        time.sleep(2.0)
        mails = sink.messages()
        assert len(mails) == 1, [m.message_id for m in mails]
    finally:
        again.stop()


# -- 4. scale-out mode: Redis broker, separate worker process ------------------------------------------
def test_redis_broker_and_separate_worker(run_dir: Path, start_ums: StartUms, sink: SmtpSink) -> None:
    require("sipp", "redis-server")
    sink.start()
    with RedisServer(run_dir) as redis:
        ums = start_ums(**vm_config(sink, pipeline={"workers": 0, "broker": redis.url()}))
        with UmsWorker(run_dir, ums) as worker:
            part = SPEECH[: 6 * RATE]
            _, sent = leave_message(run_dir, ums, part)
            recorded(ums)
            try:
                (mail,) = sink.wait_messages(1, timeout=30)
            except PeerError as exc:
                raise AssertionError(f"{exc}\nworker log:\n{worker.log()[-3000:]}") from None
            check_mail(mail, part, sent)
