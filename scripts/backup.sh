#!/usr/bin/env bash
# The seed's operator command, a thin wrapper over the `questboard-backup` CLI:
#   ./scripts/backup.sh full | incremental | status | restore [backup] | verify <backup> | list | token ...
# Settings come from the environment and a settings file: the checkout's .env whatever the current
# folder (passed as BACKUP_ENV_FILE unless that or --env-file is given), else
# /etc/questboard-backup/env (see README). `--help` on any command explains it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${BACKUP_ENV_FILE:-}" ] && [ -f "$repo/.env" ]; then
  export BACKUP_ENV_FILE="$repo/.env"
fi
if [ -x "$repo/.venv/bin/questboard-backup" ]; then
  exec "$repo/.venv/bin/questboard-backup" "$@"
elif command -v questboard-backup >/dev/null 2>&1; then
  exec questboard-backup "$@"
fi
echo "error: questboard-backup is not installed (run 'make install' in $repo)" >&2
exit 2
