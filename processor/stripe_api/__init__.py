"""Stripe's API as the processor uses it: the client and the redaction of its logs."""
