"""Typed, validated task inputs: what each state passes to its handler."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from questboard_backup.address import ID_PATTERN
from questboard_backup.errors import ConfigurationError
from questboard_backup.sources import registry


def _known_component(name: str) -> str:
    if name not in registry.names():
        raise ValueError(f"unknown component {name!r} (known: {', '.join(registry.names())})")
    return name


#: A component the registry knows (questboard_backup.sources.registry).
ComponentName = Annotated[str, AfterValidator(_known_component)]
Model = TypeVar("Model", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class BackupRequest(_Strict):
    type: Literal["full", "incremental"]
    backup_id: str | None = Field(default=None, pattern=ID_PATTERN)


class StartRequest(_Strict):
    type: Literal["full", "incremental"]
    scheduled_at: str | None = None


class BackupState(_Strict):
    backup_id: str = Field(pattern=ID_PATTERN)
    type: Literal["full", "incremental"]
    tier: Literal["daily", "weekly", "monthly", "incremental"]
    hostname: str
    started_at: str
    key: dict[str, Any]
    lock_token: str

    def plan_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude={"lock_token"})


class DumpRequest(_Strict):
    component: ComponentName
    backup: BackupState


class BackupStep(_Strict):
    backup: BackupState
    components: list[dict[str, Any]] = []


class ErrorInfo(_Strict):
    Error: str = "Unknown"
    #: Null when the failed step gave none (a task's SendTaskFailure without a cause): the failure
    #: path must still run and alert, so it reads as empty.
    Cause: str = ""

    @field_validator("Cause", mode="before")
    @classmethod
    def _null_is_empty(cls, value: object) -> object:
        return "" if value is None else value


class FailureRequest(_Strict):
    backup: BackupState | None = None
    #: The backup workflow's input (a failure before Prepare has no ``backup`` yet).
    type: Literal["full", "incremental"] | None = None
    backup_id: str | None = Field(default=None, pattern=ID_PATTERN)
    restore: dict[str, Any] | None = None
    #: Present once the restore's Swap step succeeded: every component is in place, nothing to undo.
    swapped: dict[str, Any] | None = None
    #: Present once the restore's Validate took the lock (``lock_token``), released by the failure path.
    validated: dict[str, Any] | None = None
    error: ErrorInfo = ErrorInfo()


class RestoreTargets(_Strict):
    database: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
    redis_db: int | None = Field(default=None, ge=0, le=15)
    files_root: str | None = None


class RestoreRequest(_Strict):
    backup: str = Field(min_length=1)
    only: list[ComponentName] | None = None
    targets: RestoreTargets = RestoreTargets()
    #: A restore drill: into the stack's drill targets only (never ``targets``), checked, timed, cleaned.
    drill: bool = False


class RestoreState(_Strict):
    bucket: str
    hostname: str
    set_prefix: str
    backup_id: str
    timestamp: str
    only: list[ComponentName] | None = None
    targets: RestoreTargets = RestoreTargets()
    drill: bool = False


class RestoreStep(_Strict):
    restore: RestoreState
    component: ComponentName | None = None


class ReportRequest(_Strict):
    restore: RestoreState
    #: Validate's output: its ``lock_token`` is released here.
    validated: dict[str, Any]


class SwapRequest(_Strict):
    restore: RestoreState
    #: The staged components, in restore order (Validate's list).
    components: list[ComponentName] = Field(min_length=1)


def event_time(text: object, field: str) -> datetime:
    """An ISO time from an event (a schedule's ``scheduled_at``, EventBridge's ``time``), else now."""
    if not text:
        return datetime.now(UTC)
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise ConfigurationError(
            f"invalid task input: {field}: not an ISO time: {str(text)[:40]!r}"
        ) from None


def parse(model: type[Model], event: Any) -> Model:
    """Validate a task input; a bad one is a one-line ConfigurationError naming the first problem."""
    try:
        return model.model_validate(event)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "input"
        raise ConfigurationError(f"invalid task input: {where}: {first['msg']}") from None


# What each task returns (the handlers build their results from these, and docs/serverless.md's
# contract tables are generated from them by lambdas.contracts).


class PrepareOutput(_Strict):
    backup: BackupState
    #: Where each component's dump runs ("lambda" or "fargate"); the Dump branches choose on it.
    runtime: dict[str, str] = {}


class DumpOutput(_Strict):
    """A component entry of the manifest (``parts``: PostgreSQL's further streams), or a skipped one."""

    name: str
    object: str | None = None
    raw_bytes: int | None = None
    stored_bytes: int | None = None
    sha256: str | None = None
    seconds: float | None = None
    facts: dict[str, Any] | None = None
    parts: list[dict[str, Any]] | None = None
    skipped: bool | None = None


class SealOutput(_Strict):
    backup_id: str
    stored_bytes: int


class VerifyOutput(_Strict):
    checked: dict[str, int]


class PromoteOutput(_Strict):
    location: str


class PublishOutput(_Strict):
    latest: str
    #: The components the set holds, and those this deployment has no source for (not backed up).
    components: list[str] = []
    not_configured: list[str] = []


class ReleaseOutput(_Strict):
    released: bool


class FailureOutput(_Strict):
    alerted: bool
    cause: str
    #: The restore failure path: one line per thing undone (staging removed, a swap put back).
    undone: list[str] = []


class ResolveOutput(_Strict):
    restore: RestoreState


class ValidateOutput(_Strict):
    components: list[str]
    #: The shared lock (the one backups take), held from Validate to Report or the failure path.
    lock_token: str
    #: Where each component is staged ("lambda" or "fargate"); StageComponent chooses on it.
    runtime: dict[str, str] = {}


class SwapOutput(_Strict):
    """Per component, what its swap reports (``previous``: the copy kept aside, where one is kept)."""

    components: dict[str, dict[str, Any]]


class RestoreVerifyOutput(_Strict):
    connectivity: list[str]


class ReportOutput(_Strict):
    restored: str
    targets: dict[str, Any]
    #: A drill's report: components drilled and not, checks, cleanup, the measured RTO.
    drill: dict[str, Any] | None = None
