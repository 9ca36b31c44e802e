"""The admin API's request and response bodies: Powertools validates the requests with them and builds
the OpenAPI document (docs/openapi.json) from all of them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["full", "incremental"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class BackupBody(_Body):
    type: Kind


class DownloadBody(_Body):
    backupPath: str = Field(min_length=1, max_length=1024)  # the guide's field name


class FieldProblem(_Out):
    field: str
    problem: str


class ErrorDetail(_Out):
    code: str
    message: str
    fields: list[FieldProblem] | None = None


class ErrorBody(_Out):
    """Every error, the API's own and API Gateway's: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


class Started(_Out):
    backup_id: str
    execution_arn: str
    status_url: str


class Running(_Out):
    backup_id: str
    execution_arn: str
    started_at: str
    step: str | None


class LastRun(_Out):
    id: str
    #: A last success: the components it holds, and those not configured (not backed up).
    components: list[str] | None = None
    not_configured: list[str] | None = None


class TierUsage(_Out):
    sets: int
    stored_bytes: int


class SetSummary(_Out):
    id: str
    type: str
    tier: str
    finished_at: str
    stored_bytes: int
    duration_seconds: float
    location: str


class Status(_Out):
    hostname: str
    enabled: bool
    running: Running | None
    last_success: dict[str, LastRun | None]
    #: Components the last backups skipped: this deployment has no source for them.
    not_configured: list[str]
    last_failure: dict[str, LastRun | None]
    failures_total: dict[str, int]
    storage: dict[str, TierUsage]
    next_runs: dict[str, str | None]
    backups: list[SetSummary]
    next_token: str | None


class ComponentSummary(_Out):
    name: str
    raw_bytes: int
    stored_bytes: int
    seconds: float
    objects: int
    counts: dict[str, int]


class StoredObject(_Out):
    name: str
    component: str
    stored_bytes: int


class Detail(_Out):
    backup_id: str
    type: str
    tier: str
    hostname: str
    started_at: str
    finished_at: str
    stored_bytes: int
    location: str
    components: list[ComponentSummary]
    objects: list[StoredObject]
    verification: dict[str, Any]


class SignedFile(_Out):
    name: str
    url: str
    stored_bytes: int | None


class Download(_Out):
    backup_id: str
    tier: str
    location: str
    folder: str
    expires_in: int
    expires_at: str
    files: list[SignedFile]
    verify: str
