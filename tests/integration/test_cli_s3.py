"""The CLI with BACKUP_S3_BUCKET against a moto server over HTTP: upload, list, verify and restore from S3 alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import pytest

from questboard_backup.address import BackupId
from questboard_backup.cli import main
from questboard_backup.lock import SHARED_LOCK_KEY
from questboard_backup.sources.files.component import tree_listing
from tests.conftest import S3Bucket
from tests.dataset import pg_dump_text, redis_snapshot
from tests.fault_proxy import FaultProxy, Request
from tests.integration.conftest import Deployment
from tests.servers import wait_until, wait_while_running

MiB = 2**20
TIERS = ("daily", "weekly", "monthly", "incremental")
TIER, BACKUP_ID = "(daily|weekly|monthly)", r"questboard_full_\d{8}_\d{6}"
#: The engine's botocore Config says retries max_attempts=5, which botocore counts as retries: 6 tries.
ATTEMPTS = 6
#: The fake secret the s3_bucket fixture exports: no output may show it.
SECRET = "qb-fake-secret-access-key"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def with_s3(deployment: Deployment, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    monkeypatch.setenv("BACKUP_S3_BUCKET", s3_bucket.name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.endpoint)  # boto3 honours it: the HTTP path is real
    return s3_bucket


@pytest.fixture
def proxy(with_s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """S3 through a fault proxy in front of moto: the CLI's client finds it by AWS_ENDPOINT_URL."""
    with FaultProxy(with_s3.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy


def big_files(deployment: Deployment, size: int) -> None:
    """Incompressible bytes among the uploads, so files.tar.zst.enc needs multipart (16 MiB parts)."""
    (deployment.uploads / "big.bin").write_bytes(os.urandom(size))


def files_part(number: int = 0, above: int = 0) -> Callable[[Request], bool]:
    """UploadPart requests of files.tar.zst.enc: part ``number`` if given, else every part above ``above``."""
    return lambda r: (
        r.operation == "UploadPart"
        and r.key.endswith("/files.tar.zst.enc")
        and (r.part_number == number if number else r.part_number > above)
    )


def s3_keys(bucket: S3Bucket) -> list[str]:
    pages = bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def pending_uploads(bucket: S3Bucket, with_ids: bool = False) -> list[str]:
    """The keys (``key uploadId`` with ``with_ids``) of the multipart uploads begun and not ended."""
    uploads = bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])
    return sorted(f"{u['Key']} {u['UploadId']}" if with_ids else u["Key"] for u in uploads)


@contextmanager
def backup_process() -> Iterator[subprocess.Popen[bytes]]:
    """``questboard-backup full`` in a process of its own, with this test's environment (the deployment,
    the bucket, AWS_ENDPOINT_URL naming the proxy); SIGKILLed on leaving, if still running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "questboard_backup.cli", "full"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert process.stdout is not None
        process.stdout.close()


def local_sets(deployment: Deployment) -> list[Path]:
    return [path for tier in (*TIERS, "temp") for path in (deployment.backup_dir / tier).glob("*")]


def assert_no_backup(capsys: pytest.CaptureFixture[str]) -> None:
    """Neither ``status`` nor ``list`` shows a backup, or a damaged one, in either storage."""
    code, out, err = cli(capsys, "status", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert (status["backups"], status["damaged"], status["last_success"]) == (0, 0, None)
    code, out, err = cli(capsys, "list", "--json")
    assert code == 0, err
    assert json.loads(out)["backups"] == []


def test_a_backup_goes_to_s3_tagged_and_restores_from_s3_alone(
    deployment: Deployment, with_s3: S3Bucket, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    result = json.loads(out)
    backup_id, tier = result["backup_id"], result["tier"]
    s3_uri = f"s3://{with_s3.name}/test-host/{tier}/{backup_id}"
    assert s3_uri in result["locations"]
    keys = [item["Key"] for item in with_s3.client.list_objects_v2(Bucket=with_s3.name)["Contents"]]
    prefix = f"test-host/{tier}/{backup_id}/"
    assert sorted(keys) == sorted(
        prefix + name
        for name in (
            "manifest.json",
            "postgres.dump.zst.enc",
            "postgres.part1.dump.zst.enc",  # the largest tables' rows, on further streams
            "postgres.part2.dump.zst.enc",
            "postgres.part3.dump.zst.enc",  # the server's roles
            "redis.rdbx.zst.enc",
            "files.tar.zst.enc",
            "config.tar.zst.enc",
        )
    )
    for key in keys:
        tags = with_s3.client.get_object_tagging(Bucket=with_s3.name, Key=key)["TagSet"]
        assert tags == [{"Key": "tier", "Value": tier}]
        assert with_s3.client.head_object(Bucket=with_s3.name, Key=key)["ServerSideEncryption"] == "AES256"

    shutil.rmtree(deployment.backup_dir)  # the local copy is gone: S3 alone must do
    code, out, _ = cli(capsys, "list", "--json")
    assert [(b["id"], b["storage"]) for b in json.loads(out)["backups"]] == [(backup_id, "s3")]
    code, _, err = cli(capsys, "verify", s3_uri)
    assert code == 0, err
    target_db = deployment.database_url + "_from_s3"
    code, _, err = cli(
        capsys,
        "restore",
        s3_uri,
        "--to-database-url",
        target_db,
        "--to-redis-url",
        f"{deployment.redis_base}/8",
        "--to-files-root",
        str(tmp_path / "restored"),
    )
    assert code == 0, err
    assert pg_dump_text(deployment.database_url) == pg_dump_text(target_db)
    source, target = (
        redis_snapshot(deployment.redis_base, range(0, 8)),
        redis_snapshot(deployment.redis_base, range(8, 16)),
    )
    assert source == {db - 8: keys for db, keys in target.items()}
    assert tree_listing(deployment.uploads) == tree_listing(
        tmp_path / "restored" / deployment.uploads.relative_to("/")
    )


def test_no_local_keeps_the_backup_in_s3_only(
    deployment: Deployment, with_s3: S3Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "full", "--no-local", "--json")
    assert code == 0, err
    assert all(location.startswith("s3://") for location in json.loads(out)["locations"])
    assert not any(any((deployment.backup_dir / tier).glob("*")) for tier in ("daily", "weekly", "monthly"))
    code, out, _ = cli(capsys, "status", "--json")
    assert json.loads(out)["backups"] == 1


def test_cli_runs_that_store_to_s3_keep_the_status_catalog(
    deployment: Deployment,
    with_s3: S3Bucket,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    from questboard_backup.aws.catalog_table import CatalogTable
    from tests.catalog_table import create_catalog_table

    dynamodb = boto3.client("dynamodb", endpoint_url=with_s3.endpoint, region_name="us-east-1")
    name = f"catalog-{with_s3.name}"
    create_catalog_table(dynamodb, name)
    monkeypatch.setenv("BACKUP_CATALOG_TABLE", name)
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    backup_id = json.loads(out)["backup_id"]
    table = CatalogTable(name, deployment.env["BACKUP_HOSTNAME"], dynamodb)
    page = table.status_page(10)
    assert [item["id"] for item in page.sets] == [backup_id]
    assert page.sets[0]["location"].startswith(f"s3://{with_s3.name}/")
    assert page.summary["last_success_full"]["id"] == backup_id
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    code, _, err = cli(capsys, "incremental")
    assert code == 4, err
    summary = table.status_page(10).summary
    assert summary["failures_incremental"] == 1
    assert summary["last_failure_incremental"]["error"] == "SourceUnreachableError"


def test_a_catalog_that_cannot_be_written_leaves_a_stored_backup_a_success_with_a_warning(
    deployment: Deployment,
    with_s3: S3Bucket,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKUP_CATALOG_TABLE", "no-such-table")
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    assert "status catalog did not record the backup" in err
    assert any(location.startswith("s3://") for location in json.loads(out)["locations"])


def test_an_unreachable_s3_fails_the_backup_and_leaves_no_local_set(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.servers import free_port

    monkeypatch.setenv("BACKUP_S3_BUCKET", "questboard-backups")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "super-secret-value")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, _, err = cli(capsys, "full")
    assert code == 5, err
    assert err.count("\n") == 1 and "super-secret-value" not in err
    assert not any(any((deployment.backup_dir / tier).glob("*")) for tier in ("daily", "weekly", "monthly"))
    assert not any((deployment.backup_dir / "temp").iterdir())


def test_latest_and_status_look_across_local_and_s3(
    deployment: Deployment,
    with_s3: S3Bucket,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    local_and_s3 = json.loads(out)["backup_id"]
    # Backup ids name the second: the next one needs the clock to move on.
    wait_until(lambda: str(BackupId.at("full", datetime.now(UTC))) != local_and_s3, "the next second")
    code, out, err = cli(capsys, "full", "--no-local", "--json")
    assert code == 0, err
    s3_only = json.loads(out)["backup_id"]
    assert s3_only > local_and_s3
    code, out, _ = cli(capsys, "status", "--json")
    assert json.loads(out)["last_success"]["id"] == s3_only
    code, out, err = cli(capsys, "verify", "latest", "--json")
    assert code == 0 and json.loads(out)["backup_id"] == s3_only, err


def test_s3_failing_mid_upload_fails_the_backup_in_one_line_leaving_nothing_and_the_next_run_succeeds(
    deployment: Deployment,
    with_s3: S3Bucket,
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    big_files(deployment, 40 * MiB)  # three parts: the first is let through, every later try fails
    broken = proxy.fail(files_part(above=1), times=None, status=500, code="InternalError")

    code, out, err = cli(capsys, "full")

    assert code == 5, err
    assert re.fullmatch(
        rf"error: s3://{with_s3.name}/test-host/{TIER}/{BACKUP_ID}/files\.tar\.zst\.enc: "
        r"InternalError: We encountered an internal error\. Please try again\.\n",
        err,
    ), err
    assert SECRET not in err + out
    # The upload was under way when S3 broke, and botocore retried every later part before giving up.
    assert {n: proxy.statuses(files_part(n)) for n in (1, 2, 3)} == {
        1: [200],
        2: [500] * ATTEMPTS,
        3: [500] * ATTEMPTS,
    }
    assert broken.hits == 2 * ATTEMPTS
    assert_no_backup(capsys)
    assert s3_keys(with_s3) == []  # the set's other objects, written before, were removed
    assert pending_uploads(with_s3) == []
    assert local_sets(deployment) == []

    proxy.heal()
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    result = json.loads(out)
    prefix = f"test-host/{result['tier']}/{result['backup_id']}/"
    assert f"{prefix}manifest.json" in s3_keys(with_s3)
    assert all(key.startswith(prefix) for key in s3_keys(with_s3))
    assert pending_uploads(with_s3) == []
    code, out, _ = cli(capsys, "status", "--json")
    assert json.loads(out)["backups"] == 2  # the same set, locally and in S3
    code, out, _ = cli(capsys, "list", "--json")
    assert sorted(b["storage"] for b in json.loads(out)["backups"]) == ["local", "s3"]


def test_a_run_killed_mid_upload_leaves_no_backup_and_the_next_run_removes_its_leftovers_in_s3(
    deployment: Deployment,
    with_s3: S3Bucket,
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    big_files(deployment, 20 * MiB)
    stalled = proxy.hold(files_part())  # files come after postgres and redis: those objects are in S3
    with backup_process() as process:
        wait_while_running(process, lambda: stalled.held, "the files upload to reach S3")
        keys = s3_keys(with_s3)
    proxy.heal()
    lock = f"test-host/{SHARED_LOCK_KEY}"
    assert lock in keys  # the killed run's lock object stays behind, for the next run here to take over
    keys.remove(lock)
    assert keys, "no object of the set had landed before the kill"
    leftover = keys[0].rsplit("/", 1)[0]  # test-host/{tier}/{id}
    assert keys == sorted(
        f"{leftover}/{name}"
        for name in (
            "postgres.dump.zst.enc",
            "postgres.part1.dump.zst.enc",
            "postgres.part2.dump.zst.enc",
            "postgres.part3.dump.zst.enc",  # the server's roles
            "redis.rdbx.zst.enc",
        )
    )
    assert s3_keys(with_s3) == sorted([*keys, lock])  # nothing finished it after the kill either
    assert pending_uploads(with_s3) == [f"{leftover}/files.tar.zst.enc"]

    assert_no_backup(capsys)

    leftover_id = leftover.rsplit("/", 1)[1]
    wait_until(lambda: str(BackupId.at("full", datetime.now(UTC))) != leftover_id, "the next second")
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["backup_id"] != leftover_id
    prefix = f"test-host/{result['tier']}/{result['backup_id']}/"
    assert s3_keys(with_s3) and all(key.startswith(prefix) for key in s3_keys(with_s3))
    assert pending_uploads(with_s3) == []
    messages = [record.getMessage() for record in caplog.records]
    assert f"removing leftovers of an interrupted run location=s3://{with_s3.name}/{leftover}" in messages
    assert any(m.startswith("took over a lock left by an interrupted run here") for m in messages)
    assert not any((deployment.backup_dir / "temp").iterdir())
    code, out, _ = cli(capsys, "list", "--json")
    assert {b["id"] for b in json.loads(out)["backups"]} == {result["backup_id"]}


def test_a_run_killed_during_its_first_multipart_upload_leaves_an_upload_the_next_run_aborts(
    deployment: Deployment,
    with_s3: S3Bucket,
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run killed before any object of its set is complete (a database dump above the 16 MiB part
    size is one) leaves only an unfinished multipart upload: the next run's sweep aborts it too, not
    only objects without a manifest (the bucket's 1-day AbortIncompleteMultipartUpload rule is the
    backstop, not the cleanup)."""
    import psycopg2

    with psycopg2.connect(deployment.database_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE attachments (id int PRIMARY KEY, data bytea)")
        for n in range(20):  # incompressible: its stream is a multipart upload
            cur.execute("INSERT INTO attachments VALUES (%s, %s)", (n, os.urandom(MiB)))
    # Nothing may complete: the run is frozen where a long dump spends its time, parts on their way.
    stalled = proxy.hold(
        lambda r: r.operation in ("UploadPart", "PutObject") and not r.key.endswith(SHARED_LOCK_KEY)
    )
    with backup_process() as process:
        wait_while_running(
            process,
            lambda: any(r.operation == "UploadPart" for r in stalled.held),
            "the database upload to reach S3",
        )
        keys, orphans = s3_keys(with_s3), pending_uploads(with_s3, with_ids=True)
    proxy.heal()
    assert keys == [f"test-host/{SHARED_LOCK_KEY}"]  # the run's lock, and no object of its set
    assert len(orphans) == 1 and orphans[0].startswith("test-host/") and "/postgres." in orphans[0]
    assert_no_backup(capsys)

    code, _, err = cli(capsys, "full")
    assert code == 0, err
    assert pending_uploads(with_s3, with_ids=True) == []


def test_a_backup_waits_for_another_writer_of_the_bucket_and_sweeps_nothing_meanwhile(
    deployment: Deployment, with_s3: S3Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    """The serverless workflow (or another host with the same BACKUP_HOSTNAME) holds the bucket's lock
    object: a CLI backup is refused as locked, before it sweeps what may be that writer's set in
    progress; once the lock is released it runs, sweeps, and leaves no lock behind."""
    from questboard_backup.lock import SHARED_LOCK_KEY, StorageLock
    from questboard_backup.storage.s3 import S3Storage

    in_progress = "test-host/daily/questboard_full_20200101_020000/postgres.dump.zst.enc"
    with_s3.client.put_object(Bucket=with_s3.name, Key=in_progress, Body=b"another writer's part")
    workflow = StorageLock(S3Storage(with_s3.name, "test-host", with_s3.client), SHARED_LOCK_KEY, 7200)
    token = workflow.acquire("full backup, request abc")

    code, _, err = cli(capsys, "full")
    assert code == 3, err
    assert err.count("\n") == 1 and "locked" in err and "full backup, request abc" in err
    assert s3_keys(with_s3) == [in_progress, f"test-host/{SHARED_LOCK_KEY}"]
    assert local_sets(deployment) == []

    assert workflow.release(token)
    code, out, err = cli(capsys, "full", "--json")
    assert code == 0, err
    backup_id = json.loads(out)["backup_id"]
    assert in_progress not in s3_keys(with_s3) and f"test-host/{SHARED_LOCK_KEY}" not in s3_keys(with_s3)
    assert all(f"/{backup_id}/" in key for key in s3_keys(with_s3))


def test_an_empty_listing_on_a_new_host_says_where_it_looked_and_which_hosts_have_backups(
    with_s3: S3Bucket, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, _out, err = cli(capsys, "full", "--no-local")
    assert code == 0, err
    # The recovery host: another name, an empty BACKUP_DIR, the same bucket.
    monkeypatch.setenv("BACKUP_HOSTNAME", "recovery-host")
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "new-host-backups"))
    for command in (["restore"], ["list"], ["status"]):
        code, out, err = cli(capsys, *command)
        assert code == 0, err
        assert (
            f"no backups found in {tmp_path / 'new-host-backups'}, s3://{with_s3.name}/recovery-host" in out
        )
        assert "(BACKUP_HOSTNAME=recovery-host); found backups for: test-host; set BACKUP_HOSTNAME" in out
    code, _out, err = cli(capsys, "restore", "latest")
    assert code == 7, "restore latest with nothing found keeps its exit code"
