"""ums.calls."""
