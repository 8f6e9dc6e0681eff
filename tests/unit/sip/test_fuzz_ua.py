"""Fuzz the user agent with mutated corpus messages: nothing raises, nothing breaks inside."""

from __future__ import annotations

import logging
import random

import pytest

from ums.sip.events import Addr, IncomingCall, ReInvite
from ums.sip.message import Response, parse_message
from ums.sip.ua import UaSettings, UserAgent

from .fuzzcorpus import corpus, mutated_messages

COUNT = 100_000
OPTIONS = (
    b"OPTIONS sip:ums@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bKfinal\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:probe@192.0.2.9>;tag=p\r\n"
    b"To: <sip:ums@127.0.0.1>\r\n"
    b"Call-ID: final-probe\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_mutated_messages_never_raise_or_break_the_agent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="ums.sip")
    ua = UserAgent(UaSettings(host="127.0.0.1", ports={"udp": 5060, "tcp": 5060}), random.Random(3))
    app = random.Random(4)
    sources = [Addr("udp", "192.0.2.9", 5062), Addr("tcp", "192.0.2.9", 40000), Addr("udp", "::1", 5060)]
    originals = list(corpus().values())
    now = 0.0
    for i, data in enumerate(mutated_messages(1234, COUNT)):
        now += 0.01
        if i % 10 == 0:  # keep some intact messages flowing so calls and dialogs exist
            ua.receive(app.choice(originals), app.choice(sources), now)
        ua.receive(data, app.choice(sources), now)
        if i % 7 == 0:
            ua.advance(now)
        for ev in ua.events():
            choice = app.random()
            if isinstance(ev, IncomingCall):
                if choice < 0.4:
                    ua.answer(ev.call_id, b"v=0\r\n", now)
                elif choice < 0.6:
                    ua.reject(ev.call_id, 486, "Busy Here", now)
                elif choice < 0.7:
                    ua.ring(ev.call_id)
            elif isinstance(ev, ReInvite) and choice < 0.5:
                ua.answer_reinvite(ev.call_id, b"v=0\r\n", now)
        if i % 500 == 0:
            for call_id in ua.active_calls()[:3]:
                ua.hangup(call_id, now)
        for payload, dest in ua.datagrams_to_send():
            assert isinstance(payload, bytes) and isinstance(dest, Addr)
    ua.advance(now + 100.0)
    ua.datagrams_to_send()
    ua.events()
    ua.receive(OPTIONS, sources[0], now + 100.0)
    out = ua.datagrams_to_send()
    assert len(out) == 1
    resp = parse_message(out[0][0])
    assert isinstance(resp, Response) and resp.status == 200
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
