"""Versioned SQL migrations: `NNNN_name.sql`, applied in order, each once, each in its own transaction."""
