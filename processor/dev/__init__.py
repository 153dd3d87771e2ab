"""Tools for development and tests: the Stripe emulator, a local Kafka, certificates and the demo."""
