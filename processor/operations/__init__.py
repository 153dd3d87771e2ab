"""Operator tooling: replay, reconcile, inspection and the DLQ, as library functions the CLI and HTTP call."""
