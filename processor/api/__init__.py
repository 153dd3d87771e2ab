"""The sandbox API (create, read, list) and the public refresh URL of onboarding links (ARCHITECTURE §8)."""

from processor.api.app import build_api_routes

__all__ = ["build_api_routes"]
