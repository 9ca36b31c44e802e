#!/usr/bin/env bash
# The seed's operator command, a thin wrapper over the `questboard-backup` CLI:
#   ./scripts/backup.sh full | incremental | status | restore [backup] | verify <backup> | list
# Settings come from the environment or ./.env (see README). `--help` on any command explains it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$repo/.venv/bin/questboard-backup" ]; then
  exec "$repo/.venv/bin/questboard-backup" "$@"
elif command -v questboard-backup >/dev/null 2>&1; then
  exec questboard-backup "$@"
fi
echo "error: questboard-backup is not installed (run 'make install' in $repo)" >&2
exit 2
