"""Restore step 1: find the backup the operator named (id, s3:// URI or `latest`): `latest` is the newest
set whose manifest authenticates (a forged newer one is skipped), any other reference must authenticate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import ResolveOutput, RestoreRequest, RestoreTargets, parse
from lambdas.observability import logger, metrics, tracer
from questboard_backup.address import timestamp
from questboard_backup.catalog import resolve
from questboard_backup.drill import scratch_folder
from questboard_backup.errors import ConfigurationError
from questboard_backup.storage.s3 import S3Storage


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(RestoreRequest, event)
    deps = dependencies()
    storage = deps.storage()

    def s3_factory(bucket: str, hostname: str) -> S3Storage:
        return S3Storage(bucket, hostname, deps.client("s3"))

    if request.drill and (request.only is not None or request.targets != RestoreTargets()):
        raise ConfigurationError("a drill restores into the stack's drill targets: give no targets or only")
    entry = resolve(request.backup, [storage], s3_factory, deps.key_wrapper())
    logger.set_correlation_id(entry.backup_id)
    location = entry.storage
    assert isinstance(location, S3Storage)
    stamp = timestamp(datetime.now(UTC))
    targets = request.targets.model_dump()
    if request.drill:
        settings = deps.settings
        root = settings.drill_files_root
        targets = {
            "database": settings.drill_database or None,
            "redis_db": settings.drill_redis_db,
            # The drill's own scratch folder: made by the restore, removed after the drill.
            "files_root": str(scratch_folder(root, stamp)) if root else None,
        }
    return ResolveOutput.model_validate(
        {
            "restore": {
                "bucket": location.bucket,
                "hostname": location.hostname,
                "set_prefix": entry.set_prefix,
                "backup_id": entry.backup_id,
                "timestamp": stamp,
                "only": request.only,
                "targets": targets,
                "drill": request.drill,
            }
        }
    ).model_dump()
