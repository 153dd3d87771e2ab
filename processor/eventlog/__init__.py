"""The event log: one interface (`base`), two backends (`kafka/`, and `postgres/`: a table in PostgreSQL for the
embedded default), and `factory.open_event_log` picking one from the settings.

Nothing is imported here: settings read `kafka.security`, and importing the backends would load aiokafka and
asyncpg into every command.
"""
