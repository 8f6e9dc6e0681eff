"""ums.directory."""
