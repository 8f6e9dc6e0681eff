"""ums.media: RTP audio for SIP calls.

What it does
------------
Pure modules (bytes, samples and ``now`` in; bytes, samples and events out):

* ``g711``   -- PCMU / PCMA encode and decode with lookup tables (``encode``, ``decode``).
* ``rtp``    -- ``RtpPacket`` parse/serialize, ``seq_diff``/``seq_lt``/``ts_diff``, ``RtpStreamTx``,
  ``ReceiverStats`` (RFC 3550 A.1/A.8), ``is_rtcp``/``parse_rtcp``.
* ``dtmf``   -- RFC 4733 ``TelephoneEvent``, ``DtmfReceiver``, ``dtmf_packets``.
* ``jitter`` -- ``JitterBuffer``: timestamp-ordered playout with a fill-in hook and ``flush``.
* ``tones``  -- ``Goertzel`` bank, in-band ``DtmfDetector``, ``tone`` generator.

The I/O shell:

* ``service`` -- ``RtpEndpoint`` (asyncio UDP, paced sending, symmetric RTP).

How it works
------------
Each pure module is a state object or a function over numpy blocks; ``service`` wires them to a
socket and a monotonic clock. See the module docstrings.
"""
