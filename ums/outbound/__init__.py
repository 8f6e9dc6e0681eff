"""Outbound fax and SMS jobs."""
