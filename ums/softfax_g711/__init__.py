"""ums.softfax_g711."""
