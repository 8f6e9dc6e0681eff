"""ums.sms."""
