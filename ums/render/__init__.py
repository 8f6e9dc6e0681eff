"""ums.render."""
