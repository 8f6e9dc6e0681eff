"""ums.voicemail."""
