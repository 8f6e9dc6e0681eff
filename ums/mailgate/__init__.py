"""ums.mailgate."""
