"""PostgreSQL: the connection pool, TLS, the embedded server and the schema migrations."""
