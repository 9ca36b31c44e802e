"""PostgreSQL: pg_dump/psql streams in one snapshot, and a pg_restore-j-like scheduler for the restore."""
