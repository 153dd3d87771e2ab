"""The webhook ingress: verify Stripe deliveries and make them durable before answering (ARCHITECTURE §4)."""

from processor.ingress.app import build_app

__all__ = ["build_app"]
