"""The event log in a PostgreSQL table: the log, its batching writer and its partition fences."""
