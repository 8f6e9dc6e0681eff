"""ums.pipeline."""
