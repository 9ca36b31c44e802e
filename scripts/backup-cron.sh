#!/usr/bin/env bash
# The seed's schedule command: ./scripts/backup-cron.sh setup | show
# With AWS configured (credentials and region): shows the deployed EventBridge schedules with their
# next run, or enables them (`questboard-backup schedules`). Without: installs or shows the local
# crontab lines for a full backup daily at 02:00, incrementals at 08:00, 14:00 and 20:00 (one
# backup every 6 hours) and a restore drill monthly, at the times of the deployed schedules (cdk.json's
# fullBackupSchedule, incrementalBackupSchedule and drillSchedule; tests/integration/test_scripts.py
# keeps them equal). cron reads the
# hours in the host's time zone, the AWS schedules in scheduleTimezone. The lock refuses overlaps.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

case "${1:-}" in
  setup | show)
    if "$repo/scripts/backup.sh" schedules detect; then
      exec "$repo/scripts/backup.sh" schedules "$1"
    fi
    ;;
esac
marker="# questboard-backup"
log_dir="${BACKUP_DIR:-/var/backups/questboard}/logs"

lines() {
  echo "0 2 * * * cd $repo && ./scripts/backup.sh full >> $log_dir/cron.log 2>&1 $marker"
  echo "0 8,14,20 * * * cd $repo && ./scripts/backup.sh incremental >> $log_dir/cron.log 2>&1 $marker"
  # The monthly restore drill (the guide's restore test): the 1st at 05:00, after that day's full.
  echo "0 5 1 * * cd $repo && ./scripts/backup.sh drill >> $log_dir/cron.log 2>&1 $marker"
}

if ! command -v crontab >/dev/null 2>&1; then
  echo "error: crontab is not installed (Debian: apt-get install cron)" >&2
  exit 2
fi

case "${1:-}" in
  setup)
    current="$(crontab -l 2>/dev/null | grep -vF "$marker" || true)"
    { [ -n "$current" ] && printf '%s\n' "$current"; lines; } | crontab -
    echo "installed the backup schedule:"
    crontab -l | grep -F "$marker"
    ;;
  show)
    if crontab -l 2>/dev/null | grep -F "$marker"; then
      exit 0
    fi
    echo "no backup schedule installed (run: ./scripts/backup-cron.sh setup)"
    ;;
  *)
    echo "usage: $0 setup|show" >&2
    exit 2
    ;;
esac
