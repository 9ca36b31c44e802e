"""Backup sources: PostgreSQL, Redis, application files and configuration, one module each."""
