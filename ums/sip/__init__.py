"""ums.sip."""
