"""ums — unified messaging server: SIP voice, fax and SMS to e-mail."""

__version__ = "0.1.0"
