"""ums.media."""
