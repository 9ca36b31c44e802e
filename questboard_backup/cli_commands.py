"""What each CLI subcommand does and prints: a handler per command, taking the settings and the
parsed arguments, printing text (or JSON with ``--json``) and returning the exit code."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from questboard_backup.catalog import CatalogEntry, latest, list_backups, newest_first, resolve
from questboard_backup.cli_outcomes import after_backup, after_drill, after_restore
from questboard_backup.connections import password_of, postgres_with, redis_with
from questboard_backup.crypto.keys import KeyWrapper
from questboard_backup.errors import BackupError, ConfigurationError
from questboard_backup.lock import BackupLock
from questboard_backup.manifest import Manifest, parse_time
from questboard_backup.notify import notify_failure
from questboard_backup.operations import backup_now, restore_now
from questboard_backup.redaction import remember_secret
from questboard_backup.restore import verify_backup
from questboard_backup.settings import Settings, aws_source_fields
from questboard_backup.sources import registry
from questboard_backup.sources.registry import Endpoints
from questboard_backup.space import human_size
from questboard_backup.storage.base import Storage
from questboard_backup.wiring import Wiring

#: A drill that was verified but took longer than BACKUP_DRILL_RTO_SECONDS (it is alerted on too).
DRILL_OVER_TARGET_EXIT = 9


def _emit(args: argparse.Namespace, body: Mapping[str, Any], text: str) -> None:
    print(json.dumps(body, indent=2, sort_keys=True) if getattr(args, "json", False) else text)


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.enabled:
        _emit(args, {"status": "disabled"}, "backups are disabled (BACKUP_ENABLED=false); nothing done")
        return 0
    started = datetime.now(UTC)
    try:
        run = backup_now(Wiring(settings), args.command, keep_local=not args.no_local)
    except BaseException:
        after_backup(settings, args.command, started, None)
        raise
    after_backup(settings, args.command, started, run)
    result, log = run.result, run.log
    manifest = result.manifest
    lines = [
        f"backup {manifest.backup_id} complete ({manifest.tier}, {human_size(manifest.stored_bytes)}, {result.seconds:.1f} s)"
    ]
    lines += [
        f"  {c.name:9} {human_size(c.total_raw_bytes):>10} -> {human_size(c.total_stored_bytes):>10}"
        + (f"  ({len(c.stored_objects())} streams)" if c.parts else "")
        for c in manifest.components
    ]
    lines += [f"  stored at {location}" for location in result.locations]
    lines.append(f"  log: {log}")
    _emit(
        args,
        {
            "status": "ok",
            "backup_id": manifest.backup_id,
            "tier": manifest.tier,
            "stored_bytes": manifest.stored_bytes,
            "components": {
                c.name: {
                    "raw_bytes": c.total_raw_bytes,
                    "stored_bytes": c.total_stored_bytes,
                    "objects": [part.object for part in c.stored_objects()],
                }
                for c in manifest.components
            },
            "seconds": round(result.seconds, 1),
            "locations": list(result.locations),
            "log": str(log),
        },
        "\n".join(lines),
    )
    return 0


def _all_entries(storages: Sequence[Storage], wrapper: KeyWrapper | None = None) -> list[CatalogEntry]:
    """Every storage's sets, newest first across storages (an S3-only backup may be the newest); with
    ``wrapper``, each marked authenticated or not."""
    return newest_first(entry for storage in storages for entry in list_backups(storage, wrapper))


def _nothing_found(wiring: Wiring, storages: Sequence[Storage]) -> str:
    """Where an empty listing looked and, in the bucket, which other host names do have backups."""
    settings = wiring.settings
    text = f"no backups found in {', '.join(s.description for s in storages)} (BACKUP_HOSTNAME={settings.hostname})"
    if settings.s3_bucket:
        others = [
            host
            for host in wiring.s3_storage().hostnames_in_bucket()
            if host != settings.hostname and list_backups(wiring.s3_storage(hostname=host))
        ]
        if others:
            text += f"; found backups for: {', '.join(others)}; set BACKUP_HOSTNAME"
    return text


def _listing_text(entries: Sequence[CatalogEntry], nothing: str = "no backups found") -> str:
    if not entries:
        return nothing
    lines = [f"{'BACKUP':36} {'TIER':11} {'FINISHED (UTC)':21} {'SIZE':>10}  LOCATION"]
    for entry in entries:
        if entry.manifest is None:
            lines.append(
                f"{entry.backup_id:36} {'?':11} {'?':21} {'?':>10}  {entry.location}  DAMAGED: {entry.problem}"
            )
            continue
        m = entry.manifest
        # A set whose manifest does not authenticate is shown, marked, and never used.
        mark = "" if entry.authenticated else f"  UNAUTHENTICATED: {entry.problem or 'not checked'}"
        lines.append(
            f"{m.backup_id:36} {m.tier:11} {m.finished_at:21} {human_size(m.stored_bytes):>10}  {entry.location}{mark}"
        )
    return "\n".join(lines)


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    wiring = Wiring(settings)
    storages = wiring.storages()
    entries = _all_entries(storages, wiring.key_ring())
    nothing = _nothing_found(wiring, storages) if not entries else ""
    body: dict[str, Any] = {"backups": [e.summary() for e in entries], "settings": settings.source}
    if nothing:
        body["problem"] = nothing
    _emit(args, body, f"settings: {settings.source}\n" + _listing_text(entries, nothing))
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    wiring = Wiring(settings)
    storages = wiring.storages()
    entries = _all_entries(storages, wiring.key_ring())
    nothing = _nothing_found(wiring, storages) if not entries else ""
    good = [e for e in entries if e.authenticated]
    last = good[0].manifest if good else None
    running = BackupLock(settings.backup_dir, "status").is_held_elsewhere()
    body = {
        "hostname": settings.hostname,
        "settings": settings.source,
        "enabled": settings.enabled,
        "running": running,
        "storages": [s.description for s in storages],
        "backups": len(good),
        "damaged": len(entries) - len(good),
        "last_success": good[0].summary() if good else None,
        "last_success_at": last.finished_at if last else None,
    }
    lines = [
        f"host {settings.hostname}: backups {'enabled' if settings.enabled else 'DISABLED'}",
        f"settings: {settings.source}",
        f"running now: {running or 'no'}",
        f"storage: {', '.join(s.description for s in storages)}",
        f"last success: {f'{last.backup_id} at {last.finished_at}' if last else 'never'}",
        "",
        _listing_text(entries, nothing),
    ]
    _emit(args, body, "\n".join(lines))
    return 0


def _resolve(wiring: Wiring, reference: str, wrapper: KeyWrapper) -> CatalogEntry:
    """The set ``reference`` names, its manifest authenticated and naming where it sits."""
    wanted = wiring.settings.s3_bucket or reference.startswith("s3://")
    return resolve(reference, wiring.storages(), wiring.s3_factory() if wanted else None, wrapper)


def _facts_lines(manifest: Manifest) -> list[str]:
    """What each component of a set needs from its restore target, as its registry entry tells it (the
    roles PostgreSQL's objects belong to)."""
    lines = []
    for component in manifest.components:
        text = registry.spec(component.name).describe(component.facts)
        if text:
            lines.append(f"  {component.name}: {text}")
    return lines


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    wiring = Wiring(settings)
    wrapper = wiring.key_ring()
    entry = _resolve(wiring, args.backup, wrapper)
    report = verify_backup(entry, wrapper)
    roles = {c.name: c.facts["roles"] for c in report.manifest.components if "roles" in c.facts}
    _emit(
        args,
        {"status": "ok", "backup_id": report.manifest.backup_id, "checked": report.checked, "roles": roles},
        "\n".join(
            [
                f"{report.manifest.backup_id} verified: manifest authentic, "
                + ", ".join(f"{name} {human_size(size)}" for name, size in report.checked.items())
                + " read back and authenticated",
                *_facts_lines(report.manifest),
            ]
        ),
    )
    return 0


def _restore_endpoints(settings: Settings, args: argparse.Namespace) -> Endpoints:
    # Files and config restore to the paths recorded in the manifest (or beneath --to-files-root).
    database_url = args.to_database_url or settings.database_url
    password = _password_from(args.to_database_password_env, "--to-database-password-env")
    if database_url and password is not None:
        database_url = postgres_with(database_url, password=password)
    # Without a password, libpq itself reads PGPASSWORD or ~/.pgpass (psycopg2 and pg_restore alike).
    redis_url = args.to_redis_url or settings.redis_url
    password = _password_from(args.to_redis_password_env, "--to-redis-password-env")
    if password is None and redis_url and password_of(redis_url) is None:
        password = os.environ.get("REDISCLI_AUTH") or None  # redis-cli's variable; redis-py reads none
    if redis_url and password is not None:
        redis_url = redis_with(redis_url, password=password)
    return Endpoints(
        database_url=database_url,
        redis_url=redis_url,
        redis_shift_dbs=bool(args.to_redis_url),
    )


#: The restore options naming other targets for the AWS-native components, by the variable they stand for.
_AWS_TARGET_OPTIONS = {
    "BACKUP_UPLOADS_S3_URI": "--to-uploads-s3-uri",
    "BACKUP_CONFIG_SSM_PATHS": "--to-config-ssm-paths",
    "BACKUP_CONFIG_SECRET_IDS": "--to-config-secret-ids",
}


def _aws_targets(args: argparse.Namespace) -> dict[str, Any]:
    """``--to-uploads-s3-uri``, ``--to-config-ssm-paths``, ``--to-config-secret-ids``: other targets for
    the AWS-native components, read by the settings' own rules (a bad one is refused by name)."""
    given = {
        variable: getattr(args, option.removeprefix("--").replace("-", "_")) or ""
        for variable, option in _AWS_TARGET_OPTIONS.items()
    }
    fields = aws_source_fields(given, labels=_AWS_TARGET_OPTIONS)
    return {key: value for key, value in fields.items() if value}


def _password_from(variable: str | None, option: str) -> str | None:
    if not variable:
        return None
    password = os.environ.get(variable)
    if not password:
        raise ConfigurationError(f"{option} {variable}: that environment variable is not set or empty")
    remember_secret(password)
    return password


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    if not args.backup:
        return cmd_list(settings, args)
    wiring = Wiring(settings)
    wrapper = wiring.key_ring()
    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    # Uploads in S3 and configuration in SSM / Secrets Manager go back where they came from.
    endpoints = dataclasses.replace(
        _restore_endpoints(settings, args), **{**wiring.aws_sources(), **_aws_targets(args)}
    )
    targets = wiring.restore_targets(endpoints)
    entry = _resolve(wiring, args.backup, wrapper)
    files_root = Path(args.to_files_root).absolute() if args.to_files_root else None
    try:
        report = restore_now(wiring, entry, wrapper, targets, files_root, only)
    except BaseException:
        after_restore(settings, False)
        raise
    after_restore(settings, True)
    lines = [f"restore of {report['backup_id']} complete"]
    for name, result in report["components"].items():
        lines.append(
            f"  {name:9} ok  "
            + ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, dict | list))
        )
    lines.append("  checks: connectivity ok; row/key/file counts match the manifest")
    _emit(args, {"status": "ok", **report}, "\n".join(lines))
    return 0


def _drill_endpoints(settings: Settings) -> Endpoints:
    """The drill targets: BACKUP_DRILL_DATABASE (a name on DATABASE_URL's server, or a URL),
    BACKUP_DRILL_REDIS_URL (the backup's db k into db N+k); files beneath BACKUP_DRILL_FILES_ROOT."""
    database_url = ""
    if "://" in settings.drill_database:
        database_url = settings.drill_database
    elif settings.drill_database:
        if not settings.database_url:
            raise ConfigurationError(
                "BACKUP_DRILL_DATABASE names a database on DATABASE_URL's server, but DATABASE_URL is not set"
            )
        database_url = postgres_with(settings.database_url, database=settings.drill_database)
    return Endpoints(
        database_url=database_url,
        redis_url=settings.drill_redis_url,
        redis_shift_dbs=True,
        files_paths=settings.files_paths,
        config_paths=settings.config_paths,
    )


def cmd_drill(settings: Settings, args: argparse.Namespace) -> int:
    from questboard_backup.drill import DrillPlan, over_target_message
    from questboard_backup.operations import drill_now

    wiring = Wiring(settings)
    wrapper = wiring.key_ring()
    drill_endpoints = _drill_endpoints(settings)
    # Without a drill database or Redis URL their targets are not bound: not drilled.
    targets = wiring.restore_targets(drill_endpoints)
    production = wiring.restore_targets(wiring.endpoints())
    entry = _resolve(wiring, args.backup, wrapper)
    plan = DrillPlan(settings.drill_checks, settings.drill_rto_seconds)
    try:
        report = drill_now(wiring, entry, wrapper, targets, production, plan)
    except BaseException:
        after_drill(settings, False, 0.0)
        raise
    after_drill(settings, True, report.seconds)
    lines = [
        f"restore drill of {report.backup_id} verified in {report.seconds:.1f} s "
        f"(RTO target {report.rto_target_seconds:.0f} s)"
    ]
    for name in report.drilled:
        result = report.components.get(name, {})
        lines.append(
            f"  {name:9} ok  "
            + ", ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, dict | list))
        )
    lines += [f"  not drilled: {name} (no drill target)" for name in report.not_drilled]
    lines += [f"  check {line}" for line in report.checks]
    lines += [f"  cleanup: {line}" for line in report.cleanup]
    status = "ok"
    if report.over_target:
        status = "over_target"
        message = over_target_message(report)
        lines.append(f"PROBLEM: {message}")
        notify_failure(settings, "restore drill", report.backup_id, message, None)
    _emit(args, {"status": status, **report.as_dict()}, "\n".join(lines))
    return DRILL_OVER_TARGET_EXIT if report.over_target else 0


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    problems: list[str] = []
    checks: dict[str, str] = {}
    wiring = Wiring(settings)
    for component in wiring.sources(wiring.endpoints()):
        try:
            component.check()
            checks[component.name] = "ok"
        except BackupError as error:
            checks[component.name] = "failed"
            problems.append(str(error))
    checks["settings"] = settings.source
    # Only a set whose manifest authenticates counts: a forged newer manifest cannot hide a stale backup.
    last = latest(wiring.storages(), wiring.key_ring())
    if last is None or last.manifest is None:
        problems.append("no backup has ever succeeded")
    else:
        finished = parse_time(last.manifest.finished_at)
        age_hours = (datetime.now(UTC) - finished).total_seconds() / 3600
        checks["last_backup_age_hours"] = f"{age_hours:.1f}"
        if age_hours > args.max_age_hours:
            problems.append(
                f"last backup {last.backup_id} is {age_hours:.1f} h old (more than {args.max_age_hours} h: RPO at risk)"
            )
    text = "\n".join(
        [f"{name}: {value}" for name, value in checks.items()] + [f"PROBLEM: {p}" for p in problems]
    )
    _emit(args, {"healthy": not problems, "checks": checks, "problems": problems}, text or "healthy")
    return 1 if problems else 0


def cmd_schedules(settings: Settings, args: argparse.Namespace) -> int:
    from questboard_backup.aws.scheduler import DeployedSchedules, aws_configured, scheduler_client

    if args.action == "detect":
        return 0 if aws_configured() else 1
    schedules = DeployedSchedules(scheduler_client(), settings.hostname)
    if args.action == "setup":
        changed = schedules.enable()
        print("enabled: " + ", ".join(changed) if changed else "both schedules were already enabled")
    infos = schedules.show()
    _emit(
        args,
        {"schedules": [{"kind": i.kind, "name": i.name, "expression": i.expression, "timezone": i.timezone,
                        "state": i.state, "next_run": i.next_run.isoformat() if i.next_run else None} for i in infos]},
        "\n".join(info.line() for info in infos),
    )  # fmt: skip
    return 0


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from questboard_backup.admin.tokens import TokenError, listing
    from questboard_backup.aws.token_secret import TokenSecret

    if args.action != "list" and not args.name:
        raise TokenError(f"token {args.action} needs a NAME")
    store = TokenSecret(settings.api_tokens_secret, Wiring(settings).client("secretsmanager"))
    document = store.load()
    if args.action == "create":
        document, token = document.add(args.name, args.scope)
        store.save(document)
        _emit(
            args,
            {"name": args.name, "scope": args.scope, "token": token},
            f"token {args.name} ({args.scope}) created; it is shown only now:\n{token}",
        )
    elif args.action == "revoke":
        store.save(document.revoke(args.name))
        _emit(
            args,
            {"revoked": args.name},
            f"token {args.name} revoked: the API refuses it within about 70 s (authorizer cache and token re-read)",
        )
    else:
        rows = list(listing(document))
        text = "\n".join(f"{row['name']:24} {row['scope']:6} created {row['created_at']}" for row in rows)
        _emit(args, {"tokens": rows}, text or "no tokens")
    return 0
