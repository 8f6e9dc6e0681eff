"""SIGTERM during a call: ums hangs up the caller, keeps the message and exits cleanly.

Issue 2 asks that SIGINT/SIGTERM shut down cleanly: BYE to active calls and what is
being recorded finished.  A caller leaves a message and is still on the line (sending
silence) when the server is told to stop.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.acceptance.conftest import require
from tests.acceptance.test_voicemail import RATE, SPEECH, VoicemailCaller
from tests.peers.audio import best_correlation
from tests.peers.messages import stored_messages
from tests.peers.ums import UmsServer

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(90)]


def test_sigterm_mid_call_sends_bye_and_keeps_the_message(
    run_dir: object, start_ums: Callable[..., UmsServer]
) -> None:
    require("sipp")
    ums = start_ums(pipeline={"workers": 0})
    part = SPEECH[: 4 * RATE]
    caller = VoicemailCaller(ums.config.data_dir.parent, ums.address)
    try:
        caller.wait_answered()
        caller.wait_beep_end()
        caller.say(part, then_silence=True)  # keeps the line up with silence afterwards
        caller.finish()
        ums.terminate()
        assert caller.wait_ended(15) == 0, caller.run.describe()
        assert caller.ended_by() == "remote-bye", caller.run.log_lines()
    finally:
        caller.close()
    assert ums.proc.wait(20) == 0, ums.log_tail()
    assert ums.events("server.stopping")
    ended = ums.events("call.ended")
    assert [e.get("reason") for e in ended] == ["local-bye"], [e.line for e in ended]  # our BYE
    (recorded,) = ums.events("voicemail.recorded")
    assert recorded.get("reason") == "hangup", recorded.line

    (msg,) = stored_messages(ums.config.data_dir)
    assert (msg.record.mailbox, msg.record.delivery) == ("100", "pending")
    pcm, rate = msg.audio()
    assert rate == RATE and len(pcm) >= len(part) - RATE // 10, len(pcm) / RATE
    corr, _ = best_correlation(part, pcm, max_lag=RATE)
    assert corr >= 0.9, corr
