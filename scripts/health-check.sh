#!/usr/bin/env bash
# The seed's post-restore and routine health check: ./scripts/health-check.sh [environment]
# Checks that PostgreSQL and Redis answer, the configured paths exist, and the last backup is recent
# enough for the 6-hour RPO. Exit 0 healthy, 1 unhealthy (each problem printed on one line).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
environment="${1:-}"
if [ -n "$environment" ] && [ -f "$repo/.env.$environment" ]; then
  exec "$repo/scripts/backup.sh" --env-file "$repo/.env.$environment" health
fi
exec "$repo/scripts/backup.sh" health
