"""SMS: GSM 7-bit and UCS-2 text encoding, concatenated messages, and the text of a mail as an SMS."""
