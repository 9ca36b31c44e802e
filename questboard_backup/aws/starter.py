"""Starting the backup state machine and asking what it is doing: one starter for the schedules and
the admin API, so both name an execution after its backup id (a duplicate start is refused by Step
Functions, not run twice)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from questboard_backup.address import BackupId
from questboard_backup.aws.failures import classify
from questboard_backup.errors import BackupError, ConfigurationError

#: History events whose name is the state being worked on.
_ENTERED = ("TaskStateEntered", "MapStateEntered", "ParallelStateEntered", "ChoiceStateEntered",
            "PassStateEntered", "WaitStateEntered", "SucceedStateEntered", "FailStateEntered")  # fmt: skip


class WorkflowError(BackupError):
    """Step Functions refused or failed a call (start, list, history); exit code 5."""

    exit_code = 5


@dataclass(frozen=True)
class Started:
    backup_id: str
    started: bool  # False: an execution with this id exists already (a duplicate delivery)
    execution_arn: str


@dataclass(frozen=True)
class Running:
    execution_arn: str
    name: str
    started_at: str
    step: str | None


def _fail(error: BotoCoreError | ClientError, what: str) -> WorkflowError:
    return WorkflowError(f"Step Functions {what}: {classify(error)}")


class BackupStarter:
    def __init__(self, sfn: Any, state_machine_arn: str) -> None:
        if not state_machine_arn:
            raise ConfigurationError("BACKUP_STATE_MACHINE_ARN is not set")
        self._sfn, self.state_machine_arn = sfn, state_machine_arn

    def start(self, kind: str, at: datetime) -> Started:
        """Start the ``kind`` backup of the moment ``at`` (a schedule slot, or now)."""
        backup_id = str(BackupId.at(kind, at))
        execution_arn = self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{backup_id}"
        try:
            execution = self._sfn.start_execution(
                stateMachineArn=self.state_machine_arn,
                name=backup_id,
                input=json.dumps({"type": kind, "backup_id": backup_id}),
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
                return Started(backup_id, False, execution_arn)
            raise _fail(error, "StartExecution") from None
        except BotoCoreError as error:
            raise _fail(error, "StartExecution") from None
        return Started(backup_id, True, str(execution["executionArn"]))

    def running(self) -> Running | None:
        """The running execution, if any, with the state it is in (two calls at most)."""
        try:
            found = self._sfn.list_executions(
                stateMachineArn=self.state_machine_arn, statusFilter="RUNNING", maxResults=1
            ).get("executions", [])
            if not found:
                return None
            execution = found[0]
            events = self._sfn.get_execution_history(
                executionArn=execution["executionArn"], reverseOrder=True, maxResults=20
            ).get("events", [])
        except (BotoCoreError, ClientError) as error:
            raise _fail(error, "ListExecutions") from None
        step = next(
            (
                str(event["stateEnteredEventDetails"]["name"])
                for event in events
                if event.get("type") in _ENTERED
            ),
            None,
        )
        started = execution.get("startDate")
        return Running(
            execution_arn=str(execution["executionArn"]),
            name=str(execution["name"]),
            started_at=started.isoformat() if isinstance(started, datetime) else str(started or ""),
            step=step,
        )
