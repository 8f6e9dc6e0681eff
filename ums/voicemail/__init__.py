"""Voicemail: the greeting -> beep -> recording call flow and its prompts.

What it does
------------
* :mod:`ums.voicemail.machine`: :class:`VoicemailSession`, the sans-I/O call flow (``tx(n)``,
  ``rx(pcm)``, ``digit(d)``, ``hangup()`` in; ``events()``, ``take_recorded()`` out) and its
  :class:`VoicemailSettings`;
* :mod:`ums.voicemail.prompts`: greetings (administrator files through a decoder passed in, or the
  built-in prompt), selection by diversion reason, the beep, the goodbye prompt.

How it works
------------
The machine never reads a clock or a file: time is the number of samples sent and received. The
call layer owns the media endpoint and the recording file and moves samples between them.
"""

from .machine import (
    DigitReceived,
    Event,
    HangupRequested,
    RecordingDiscarded,
    RecordingFinished,
    RecordingStarted,
    State,
    VoicemailSession,
    VoicemailSettings,
)
from .prompts import (
    GreetingError,
    beep,
    default_goodbye,
    default_greeting,
    greeting_kind,
    load_greeting,
    load_greetings,
    select_greeting,
)

__all__ = [
    "DigitReceived",
    "Event",
    "GreetingError",
    "HangupRequested",
    "RecordingDiscarded",
    "RecordingFinished",
    "RecordingStarted",
    "State",
    "VoicemailSession",
    "VoicemailSettings",
    "beep",
    "default_goodbye",
    "default_greeting",
    "greeting_kind",
    "load_greeting",
    "load_greetings",
    "select_greeting",
]
