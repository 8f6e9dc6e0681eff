"""ums.fax_t38."""
