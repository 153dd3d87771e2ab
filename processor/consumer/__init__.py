"""The core: consumers that read the event log and drive each sandbox through the lifecycle."""
