"""Stripe claimable-sandbox webhook processor."""

__version__ = "0.1.0"
