"""Quest Board Backup: the engine that backs up and restores PostgreSQL, Redis, files and config."""

__version__ = "0.1.0"
