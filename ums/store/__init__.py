"""ums.store."""
