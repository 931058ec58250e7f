"""PostgreSQL storage: migrations, the embedded server, queries run as a caller."""
