"""ums.fax."""
