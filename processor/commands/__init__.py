"""Subcommands of the `processor` CLI, one module per feature."""
