"""The admin API's engine: tokens, the status catalog, starting backups and signing downloads."""
