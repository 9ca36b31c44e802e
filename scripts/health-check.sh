#!/usr/bin/env bash
# The seed's post-restore and routine health check: ./scripts/health-check.sh [environment]
# Checks that PostgreSQL and Redis answer, the configured paths exist, and the last backup is recent
# enough for the 6-hour RPO. Exit 0 healthy, 1 unhealthy (each problem printed on one line).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
synopsis="usage: $0 [-h|--help] [environment]"

usage() {
  cat <<EOF
$synopsis

Checks that PostgreSQL and Redis answer, that the configured paths exist, and that the last
successful backup is at most 7 hours old (the 6-hour RPO plus a margin). Prints each check, then
each problem on one line. Exit 0 healthy, 1 unhealthy, 2 bad usage or configuration.

  environment  read the settings from $repo/.env.<environment> when that file exists;
               otherwise, and without an environment, from where scripts/backup.sh always
               looks (README, Configuration). Variables set in the environment win over files.
  -h, --help   show this help and exit without checking anything
EOF
}

case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
  -*)
    echo "$0: unknown option $1 ($synopsis)" >&2
    exit 2
    ;;
esac
if [ "$#" -gt 1 ]; then
  echo "$0: one environment at most ($synopsis)" >&2
  exit 2
fi

environment="${1:-}"
if [ -n "$environment" ] && [ -f "$repo/.env.$environment" ]; then
  exec "$repo/scripts/backup.sh" --env-file "$repo/.env.$environment" health
fi
exec "$repo/scripts/backup.sh" health
