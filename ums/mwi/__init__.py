"""ums.mwi."""
