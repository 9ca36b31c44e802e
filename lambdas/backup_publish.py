"""Backup step 6: publish the success metrics and move the `latest` pointer, from the manifest this
execution verified and promoted (it must name where it sits; no key is needed: readers of `latest`
authenticate what they use)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.dependencies import dependencies
from lambdas.models import BackupStep, PublishOutput, parse
from lambdas.observability import logger, metrics, tracer
from questboard_backup.address import SetAddress
from questboard_backup.catalog import read_manifest, write_latest_pointer
from questboard_backup.errors import BackupError
from questboard_backup.manifest import parse_time
from questboard_backup.sources import registry


@logger.inject_lambda_context(correlation_id_path="backup.backup_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(BackupStep, event)
    deps = dependencies()
    storage = deps.storage()
    set_prefix = SetAddress(request.backup.hostname, request.backup.tier, request.backup.backup_id).set_prefix
    manifest = read_manifest(storage, set_prefix)
    write_latest_pointer(storage, manifest)
    # What this deployment has no source for is said, not hidden behind a "complete" backup.
    skipped = [str(c.get("name")) for c in request.components if c.get("skipped")]
    not_configured = registry.not_configured(skipped, [entry.name for entry in manifest.components])
    if not_configured:
        logger.warning("parts of Quest Board not configured: not backed up", extra={"parts": not_configured})
    table = deps.catalog_table()
    if table is not None:
        try:  # the set exists (verified, promoted, pointed to): a stale index must not fail it
            table.record_success(manifest, storage.uri(set_prefix), not_configured=not_configured)
        except BackupError as error:
            logger.error("the status catalog did not record the backup", extra={"problem": str(error)})
    started, finished = parse_time(manifest.started_at), parse_time(manifest.finished_at)
    metrics.add_dimension(name="type", value=manifest.type)
    metrics.add_metric(
        name="backup_last_success_timestamp", unit=MetricUnit.Seconds, value=finished.timestamp()
    )
    metrics.add_metric(
        name="backup_duration_seconds", unit=MetricUnit.Seconds, value=(finished - started).total_seconds()
    )
    metrics.add_metric(name="backup_size_bytes", unit=MetricUnit.Bytes, value=manifest.stored_bytes)
    metrics.add_metric(name="backup_success_total", unit=MetricUnit.Count, value=1)
    return PublishOutput(
        latest=storage.uri(set_prefix),
        components=[entry.name for entry in manifest.components],
        not_configured=not_configured,
    ).model_dump()
