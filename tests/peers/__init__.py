"""Helpers that run real SIP peers (SIPp, Kamailio, baresip) and the server on loopback.

What it does
------------
Small building blocks for the acceptance tests and the benchmarks: free ports,
supervised subprocesses, SIPp runs with their traces, a Kamailio registrar, a
headless baresip phone, pcap/RTP/G.711 decoding for reference audio, WAV
correlation, and starting ``ums serve`` with a generated configuration.

How it works
------------
Every process writes its output to a log file in a run directory chosen by the
caller, every wait has a bounded timeout, and every started process is reaped
on exit.  ``python -m tests.peers.selfcheck`` exercises the pieces against each
other without the server.
"""
