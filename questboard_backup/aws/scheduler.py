"""The deployed backup schedules (EventBridge Scheduler): show them with their next run, enable them.

`scripts/backup-cron.sh show|setup` uses this when AWS is configured, the local crontab otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from botocore.exceptions import BotoCoreError, ClientError

from questboard_backup.aws.failures import classify
from questboard_backup.errors import ConfigurationError, NotFoundError, SchedulerError

KINDS = ("full", "incremental")
_UPDATE_FIELDS = (
    "Name", "GroupName", "ScheduleExpression", "ScheduleExpressionTimezone", "FlexibleTimeWindow", "Target",
    "Description", "StartDate", "EndDate", "KmsKeyArn", "ActionAfterCompletion",
)  # fmt: skip


def schedule_name(hostname: str, kind: str) -> str:
    """Must match infra/constants.py: the stack names its schedules this way."""
    return f"questboard-backup-{hostname}-{kind}"


def _field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base in ("*", "?"):
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-", 1)
            start, end = int(first), int(last)
        else:
            start = end = int(base)
            if step_text:
                end = high
        values.update(range(start, end + 1, step))
    return values


def next_run(expression: str, timezone: str, after: datetime) -> datetime | None:
    """Next time a `cron(min hour day month weekday year)` or `rate(n unit)` schedule fires after ``after``.

    Supports numbers, lists, ranges, steps, `*` and `?` (what the stack uses); None for other forms.
    """
    if expression.startswith("rate(") or not expression.startswith("cron("):
        return None
    fields = expression[5:-1].split()
    if len(fields) != 6 or any(c.isalpha() for c in "".join(fields[:5]).replace("?", "")):
        return None
    minutes, hours = _field(fields[0], 0, 59), _field(fields[1], 0, 23)
    days, months = _field(fields[2], 1, 31), _field(fields[3], 1, 12)
    weekdays = _field(fields[4], 1, 7)  # EventBridge: 1 = Sunday
    zone = ZoneInfo(timezone)
    moment = after.astimezone(zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(366 * 24 * 60):
        weekday = moment.isoweekday() % 7 + 1
        if (
            moment.minute in minutes
            and moment.hour in hours
            and moment.month in months
            and (fields[2] == "?" or moment.day in days)
            and (fields[4] == "?" or weekday in weekdays)
        ):
            return moment
        moment += timedelta(minutes=1)
    return None


@dataclass(frozen=True)
class ScheduleInfo:
    kind: str
    name: str
    expression: str
    timezone: str
    state: str
    next_run: datetime | None

    def line(self) -> str:
        upcoming = self.next_run.isoformat() if self.next_run and self.state == "ENABLED" else "-"
        return f"{self.kind:12} {self.state:9} {self.expression} ({self.timezone})  next: {upcoming}  [{self.name}]"


class DeployedSchedules:
    def __init__(self, client: Any, hostname: str) -> None:
        self._scheduler = client
        self._hostname = hostname

    def _get(self, kind: str) -> dict[str, Any]:
        name = schedule_name(self._hostname, kind)
        try:
            return dict(self._scheduler.get_schedule(Name=name))
        except (BotoCoreError, ClientError) as error:
            failure = classify(error)
            if failure.code == "ResourceNotFoundException":
                raise NotFoundError(
                    f"schedule {name} is not deployed (is BACKUP_HOSTNAME the stack's hostname?)"
                ) from None
            raise SchedulerError(f"EventBridge Scheduler GetSchedule {name} failed: {failure}") from None

    def show(self, now: datetime | None = None) -> list[ScheduleInfo]:
        moment = now or datetime.now(UTC)
        infos = []
        for kind in KINDS:
            body = self._get(kind)
            timezone = str(body.get("ScheduleExpressionTimezone") or "UTC")
            expression = str(body["ScheduleExpression"])
            infos.append(
                ScheduleInfo(kind, str(body["Name"]), expression, timezone, str(body.get("State", "?")),
                             next_run(expression, timezone, moment))
            )  # fmt: skip
        return infos

    def enable(self) -> list[str]:
        """Set both schedules ENABLED (keeping everything else as deployed); returns the names changed."""
        changed = []
        for kind in KINDS:
            body = self._get(kind)
            if body.get("State") == "ENABLED":
                continue
            request = {field: body[field] for field in _UPDATE_FIELDS if body.get(field) is not None}
            try:
                self._scheduler.update_schedule(**request, State="ENABLED")
            except (BotoCoreError, ClientError) as error:
                raise SchedulerError(
                    f"EventBridge Scheduler UpdateSchedule {body['Name']} failed: {classify(error)}"
                ) from None
            changed.append(str(body["Name"]))
        return changed


def aws_configured() -> bool:
    """True when boto3 finds credentials and a region (the schedules then live in AWS)."""
    import boto3

    session = boto3.session.Session()
    return session.get_credentials() is not None and bool(session.region_name)


def scheduler_client() -> Any:
    import boto3

    if not aws_configured():
        raise ConfigurationError("no AWS configuration (credentials and region) for EventBridge Scheduler")
    return boto3.client("scheduler")
