"""The ssmconfig component against a moto server over HTTP (SSM Parameter Store and Secrets Manager):
round trips through the real backup and restore, SecureStrings included, values never in facts, logs or
errors, damaged streams refused before anything is written, undo and leftovers from any process."""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
import pytest
from botocore.exceptions import ClientError

from questboard_backup.address import timestamp
from questboard_backup.backup import run_backup
from questboard_backup.catalog import list_backups
from questboard_backup.crypto.keys import PassphraseKeyWrapper
from questboard_backup.errors import (
    ConfigurationError,
    IntegrityError,
    RestoreVerificationError,
    SourceError,
    SourceUnreachableError,
)
from questboard_backup.pipeline import ComponentWriter, StreamStats
from questboard_backup.restore import run_restore
from questboard_backup.settings import Settings
from questboard_backup.sources.base import RestoreOptions, StreamOpener
from questboard_backup.sources.registry import Endpoints
from questboard_backup.sources.ssmconfig import SsmConfigComponent
from questboard_backup.sources.ssmconfig.calls import failure
from questboard_backup.storage.local import LocalStorage
from questboard_backup.wiring import Wiring
from tests import sealed

KEY = os.urandom(32)
MOMENT = datetime(2024, 1, 2, 2, 0, tzinfo=UTC)
CONTEXT = f"{timestamp(MOMENT)}/ssmconfig"
#: Values no fact, log line or error may ever show.
DATABASE_PASSWORD = "pw-" + uuid.uuid4().hex
API_TOKEN = "tok-" + uuid.uuid4().hex
SIGNING_KEY = b"\x00\xffsigning-" + uuid.uuid4().bytes
SECRETS = (DATABASE_PASSWORD, API_TOKEN, SIGNING_KEY.hex())


@dataclass
class Aws:
    ssm: Any
    secrets: Any
    client: Callable[[str], Any]
    path: str
    secret_ids: tuple[str, str]

    def component(
        self, path: str | None = None, secret_ids: tuple[str, ...] | None = None
    ) -> SsmConfigComponent:
        return SsmConfigComponent(
            (path or self.path,), self.secret_ids if secret_ids is None else secret_ids, self.client
        )


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """Clients of the moto server (fake credentials), and names of this test's own: a fresh path and two
    secret ids nobody else uses (the server lives for the whole session)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAQBTESTFAKEKEY000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "qb-fake-secret-access-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=moto_server, region_name="us-east-1")

    run = uuid.uuid4().hex[:12]
    yield Aws(
        client("ssm"),
        client("secretsmanager"),
        client,
        f"/qb{run}/prod",
        (f"qb{run}/api", f"qb{run}/signing"),
    )


def fill(aws: Aws) -> None:
    put = aws.ssm.put_parameter
    put(Name=f"{aws.path}/mode", Value="production", Type="String", Description="run mode")
    put(Name=f"{aws.path}/hosts", Value="a.example,b.example", Type="StringList", Description="upstreams")
    put(Name=f"{aws.path}/db/password", Value=DATABASE_PASSWORD, Type="SecureString", Description="db")
    put(Name=f"{aws.path}/db/pool/size", Value="20", Type="String", AllowedPattern=r"^\d+$")
    put(Name=f"{aws.path}-other/untouched", Value="beside the path", Type="String")
    aws.secrets.create_secret(Name=aws.secret_ids[0], SecretString=json.dumps({"token": API_TOKEN}))
    aws.secrets.create_secret(Name=aws.secret_ids[1], SecretBinary=SIGNING_KEY)


def parameters(aws: Aws, path: str | None = None) -> dict[str, tuple[str, str]]:
    """Name -> (type, decrypted value) of every parameter under the path."""
    pages = aws.ssm.get_paginator("get_parameters_by_path").paginate(
        Path=path or aws.path, Recursive=True, WithDecryption=True
    )
    return {item["Name"]: (item["Type"], item["Value"]) for page in pages for item in page["Parameters"]}


def secrets(aws: Aws, secret_ids: tuple[str, ...] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for secret_id in secret_ids or aws.secret_ids:
        try:
            value = aws.secrets.get_secret_value(SecretId=secret_id)
        except aws.secrets.exceptions.ResourceNotFoundException:
            found[secret_id] = None
            continue
        found[secret_id] = value.get("SecretString", value.get("SecretBinary"))
    return found


def restore_marks(aws: Aws, path: str | None = None) -> list[str]:
    """Marks beside the path and restore tags on its parameters and the secrets: what settling removes."""
    path = path or aws.path
    named = {"Key": "Name", "Option": "BeginsWith", "Values": [f"{path}.restore-"]}
    marks = [item["Name"] for item in aws.ssm.describe_parameters(ParameterFilters=[named])["Parameters"]]
    for name in parameters(aws, path):
        tags = aws.ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"]
        marks += [f"{name} {tag['Key']}" for tag in tags if tag["Key"].startswith("qb-restore-")]
    for secret_id in aws.secret_ids:
        try:
            tags = aws.secrets.describe_secret(SecretId=secret_id).get("Tags") or []
        except aws.secrets.exceptions.ResourceNotFoundException:
            continue
        marks += [f"{secret_id} {tag['Key']}" for tag in tags if tag["Key"].startswith("qb-restore-")]
    return marks


def alter(aws: Aws) -> None:
    """After the backup: a SecureString changed, a parameter deleted, one added, both secrets changed."""
    aws.ssm.put_parameter(
        Name=f"{aws.path}/db/password", Value="leaked-and-rotated", Type="SecureString", Overwrite=True
    )
    aws.ssm.delete_parameter(Name=f"{aws.path}/hosts")
    aws.ssm.put_parameter(Name=f"{aws.path}/feature/new", Value="on", Type="String")
    aws.secrets.put_secret_value(SecretId=aws.secret_ids[0], SecretString="rotated")
    aws.secrets.put_secret_value(SecretId=aws.secret_ids[1], SecretBinary=b"rotated key")


def options(offset: int = 0) -> RestoreOptions:
    return RestoreOptions(timestamp(MOMENT + timedelta(days=1, seconds=offset)))


def backup(target: SsmConfigComponent) -> tuple[dict[str, Any], bytes, StreamStats]:
    stored = io.BytesIO()
    writer = ComponentWriter(stored, KEY, CONTEXT)
    facts = target.dump(cast(BinaryIO, writer))
    stats = writer.finish()
    return facts, stored.getvalue(), stats


def opener(stored: bytes, stats: StreamStats) -> StreamOpener:
    return sealed.opener(stored, stats, KEY, CONTEXT, "ssmconfig")


def assert_no_values(text: str) -> None:
    for value in SECRETS:
        assert value not in text


def test_parameters_and_secrets_round_trip_through_the_engine_and_no_value_shows_anywhere(
    aws: Aws, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="questboard_backup")
    fill(aws)
    original, original_secrets = parameters(aws), secrets(aws)
    beside = parameters(aws, f"{aws.path}-other")
    storage = LocalStorage(tmp_path / "backups")
    wrapper = PassphraseKeyWrapper("ssmconfig test passphrase")

    result = run_backup("full", [aws.component()], [storage], wrapper, "test-host", UTC, MOMENT)

    facts = result.manifest.component("ssmconfig").facts
    assert facts == {"paths": [aws.path], "secret_ids": list(aws.secret_ids), "parameters": 4, "secrets": 2}
    stored = b"".join(path.read_bytes() for path in (tmp_path / "backups").rglob("*") if path.is_file())
    for value in (DATABASE_PASSWORD.encode(), API_TOKEN.encode(), SIGNING_KEY):
        assert value not in stored  # in the set only encrypted
    versions = {name: aws.ssm.get_parameter(Name=name)["Parameter"]["Version"] for name in original}
    alter(aws)
    (entry,) = list_backups(storage)

    report = run_restore(entry, wrapper, {"ssmconfig": aws.component()}, options())

    restored = parameters(aws)
    assert {name: restored[name] for name in original} == original
    assert restored[f"{aws.path}/db/password"] == ("SecureString", DATABASE_PASSWORD)
    assert restored[f"{aws.path}/feature/new"] == ("String", "on")  # not in the backup: left as it is
    assert secrets(aws) == original_secrets
    assert parameters(aws, f"{aws.path}-other") == beside
    described = aws.ssm.describe_parameters(
        ParameterFilters=[{"Key": "Name", "Values": [f"{aws.path}/db/password", f"{aws.path}/hosts"]}]
    )["Parameters"]
    assert {
        item["Name"][len(aws.path) :]: (item.get("Description"), item.get("AllowedPattern"))
        for item in described
    } == {
        "/db/password": ("db", None),
        "/hosts": ("upstreams", None),  # deleted after the backup: created again, description and all
    }
    swapped = report["components"]["ssmconfig"]
    previous = swapped["previous"]["parameters"]
    assert previous == {
        f"{aws.path}/db/password": versions[f"{aws.path}/db/password"] + 1,
        f"{aws.path}/hosts": None,
    }
    assert swapped["unchanged"] == 2 and set(swapped["previous"]["secrets"]) == set(aws.secret_ids)
    assert restore_marks(aws) == []  # settled
    assert_no_values(json.dumps(facts) + json.dumps(report) + caplog.text)
    assert "ssmconfig" in caplog.text  # the component did log


def _tampered(stored: bytes) -> bytes:
    middle = len(stored) // 2
    return stored[:middle] + bytes([stored[middle] ^ 0x01]) + stored[middle + 1 :]


def _seal(members: list[tuple[str, bytes, dict[str, str]]]) -> tuple[bytes, StreamStats]:
    stored = io.BytesIO()
    writer = ComponentWriter(stored, KEY, CONTEXT)
    with tarfile.open(fileobj=cast(BinaryIO, writer), mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, data, headers in members:
            info = tarfile.TarInfo(name)
            info.size, info.pax_headers = len(data), headers
            tar.addfile(info, io.BytesIO(data))
    stats = writer.finish()
    return stored.getvalue(), stats


SECURE = {"QB.ssm.Type": "SecureString"}
Damage = Callable[
    [bytes, StreamStats, dict[str, Any]], tuple[bytes, StreamStats, dict[str, Any], type[Exception]]
]
DAMAGES: dict[str, Damage] = {
    "flipped byte": lambda stored, stats, facts: (_tampered(stored), stats, facts, IntegrityError),
    "truncated": lambda stored, stats, facts: (stored[: len(stored) - 50], stats, facts, IntegrityError),
    "facts claim another parameter": lambda stored, stats, facts: (
        stored,
        stats,
        {**facts, "parameters": facts["parameters"] + 1},
        RestoreVerificationError,
    ),
    "a parameter twice": lambda stored, stats, facts: (
        *_seal([("parameters/0/a", DATABASE_PASSWORD.encode(), SECURE), ("parameters/0/a", b"x", SECURE)]),
        {**facts, "parameters": 2, "secrets": 0},
        IntegrityError,
    ),
    "a path outside the set": lambda stored, stats, facts: (
        *_seal([("parameters/7/a", DATABASE_PASSWORD.encode(), SECURE)]),
        {**facts, "parameters": 1, "secrets": 0},
        IntegrityError,
    ),
    "an unknown type": lambda stored, stats, facts: (
        *_seal([("parameters/0/a", DATABASE_PASSWORD.encode(), {"QB.ssm.Type": "Plaintext"})]),
        {**facts, "parameters": 1, "secrets": 0},
        IntegrityError,
    ),
}


#: What each refusal says.
REASONS = {
    "flipped byte": "",
    "truncated": "",
    "facts claim another parameter": "parameters 5 expected, 4 found",
    "a parameter twice": "refused: duplicate",
    "a path outside the set": "unknown path or secret number",
    "an unknown type": "unknown parameter type",
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_or_hostile_stream_is_refused_at_stage_and_nothing_is_written(
    aws: Aws, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="questboard_backup")
    fill(aws)
    facts, stored, stats = backup(aws.component())
    alter(aws)
    before = (parameters(aws), secrets(aws), _versions(aws))
    stored, stats, facts, refusal = DAMAGES[damage](stored, stats, facts)

    with pytest.raises(refusal) as refused:
        aws.component().restore(opener(stored, stats), facts, options())

    assert "\n" not in str(refused.value) and REASONS[damage] in str(refused.value)
    assert_no_values(str(refused.value) + caplog.text)
    assert (parameters(aws), secrets(aws), _versions(aws)) == before
    assert restore_marks(aws) == []


def _versions(aws: Aws) -> dict[str, int]:
    return {name: aws.ssm.get_parameter(Name=name)["Parameter"]["Version"] for name in parameters(aws)}


def test_undo_after_the_swap_puts_back_exactly_the_previous_values_from_another_process(aws: Aws) -> None:
    fill(aws)
    facts, stored, stats = backup(aws.component())
    original, original_secrets = parameters(aws), secrets(aws)
    alter(aws)
    aws.secrets.delete_secret(SecretId=aws.secret_ids[1], ForceDeleteWithoutRecovery=True)
    before, before_secrets = parameters(aws), secrets(aws)
    chosen = options()

    staged = aws.component()
    report = staged.stage(opener(stored, stats), facts, chosen)
    assert report == {"paths": [aws.path], "secret_ids": list(aws.secret_ids), "parameters": 4, "secrets": 2}
    assert (parameters(aws), secrets(aws)) == (before, before_secrets)  # staging writes nothing
    swapped = staged.swap_in(chosen)
    assert swapped["previous"]["secrets"][aws.secret_ids[1]] is None  # created by the restore
    restored = parameters(aws)
    assert {name: restored[name] for name in original} == original and secrets(aws) == original_secrets
    assert restore_marks(aws)  # unsettled: marked

    later = aws.component()  # another process: only the target and the timestamp
    lines = later.undo(chosen)

    assert parameters(aws) == before and secrets(aws) == before_secrets
    assert restore_marks(aws) == []
    assert any("1 put back, 1 created ones deleted" in line for line in lines)
    assert any("created by the restore, deleted" in line for line in lines)
    assert later.undo(chosen) == []


def test_swap_in_refuses_in_a_process_that_did_not_stage(aws: Aws) -> None:
    fill(aws)
    facts, stored, stats = backup(aws.component())
    chosen = options()
    aws.component().stage(opener(stored, stats), facts, chosen)
    with pytest.raises(SourceError, match="nothing staged in this process"):
        aws.component().swap_in(chosen)
    assert restore_marks(aws) == []


def test_a_failing_swap_puts_back_what_it_wrote_and_its_error_shows_no_value(
    aws: Aws, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="questboard_backup")
    fill(aws)
    storage = LocalStorage(tmp_path / "backups")
    wrapper = PassphraseKeyWrapper("ssmconfig test passphrase")
    run_backup("full", [aws.component()], [storage], wrapper, "test-host", UTC, MOMENT)
    alter(aws)
    # Scheduled for deletion: the secret cannot be read or written, so its swap fails after the
    # parameters were written.
    aws.secrets.delete_secret(SecretId=aws.secret_ids[1], RecoveryWindowInDays=7)
    before = parameters(aws)
    (entry,) = list_backups(storage)

    with pytest.raises(SourceError) as refused:
        run_restore(entry, wrapper, {"ssmconfig": aws.component()}, options())

    assert aws.secret_ids[1] in str(refused.value) and "\n" not in str(refused.value)
    assert parameters(aws) == before
    assert secrets(aws, aws.secret_ids[:1]) == {aws.secret_ids[0]: "rotated"}
    assert restore_marks(aws) == []
    assert_no_values(str(refused.value) + caplog.text)


def test_clear_leftovers_settles_a_finished_swap_and_puts_back_an_unfinished_one(aws: Aws) -> None:
    fill(aws)
    facts, stored, stats = backup(aws.component())
    original = parameters(aws)
    alter(aws)

    # A restore killed after its swap, before settling: the restored values stay.
    finished = options(1)
    killed = aws.component()
    killed.stage(opener(stored, stats), facts, finished)
    killed.swap_in(finished)
    lines = aws.component().clear_leftovers(options(2))
    assert any(f"settled the swap of an earlier restore ({finished.timestamp})" in line for line in lines)
    restored = parameters(aws)
    assert {name: restored[name] for name in original} == original
    assert restore_marks(aws) == []

    # A restore killed while it wrote the parameters: its mark still says so; the next one puts back.
    alter_again = f"{aws.path}/mode"
    aws.ssm.put_parameter(Name=alter_again, Value="maintenance", Type="String", Overwrite=True)
    before = parameters(aws)
    unfinished = options(3)
    killed = aws.component()
    killed.stage(opener(stored, stats), facts, unfinished)
    killed.swap_in(unfinished)
    aws.ssm.put_parameter(
        Name=f"{aws.path}.restore-{unfinished.timestamp}",
        Value=json.dumps({"target": aws.path, "state": "swapping"}),
        Type="String",
        Overwrite=True,
    )
    lines = aws.component().clear_leftovers(options(4))
    assert any("undone: 1 put back" in line for line in lines)
    assert parameters(aws) == before
    assert restore_marks(aws) == []
    assert aws.component().clear_leftovers(options(4)) == []


def test_a_restore_elsewhere_maps_paths_and_secrets_by_position(aws: Aws) -> None:
    fill(aws)
    facts, stored, stats = backup(aws.component())
    elsewhere, other_ids = f"{aws.path}-copy", (f"{aws.secret_ids[0]}-copy", f"{aws.secret_ids[1]}-copy")
    target = aws.component(elsewhere, other_ids)

    report = target.restore(opener(stored, stats), facts, options())

    assert report["paths"] == [elsewhere] and report["secret_ids"] == list(other_ids)
    copied = parameters(aws, elsewhere)
    assert {name[len(elsewhere) :]: value for name, value in copied.items()} == {
        name[len(aws.path) :]: value for name, value in parameters(aws).items()
    }
    assert list(secrets(aws, other_ids).values()) == list(secrets(aws).values())
    with pytest.raises(ConfigurationError, match="holds 2 secret ids"):
        aws.component(elsewhere, other_ids[:1]).stage(opener(stored, stats), facts, options(1))


def test_an_unconfigured_endpoint_is_skipped_and_a_configured_one_bound(aws: Aws) -> None:
    wiring = Wiring(Settings.from_env({}))
    assert wiring.source("ssmconfig", Endpoints()) is None
    assert "ssmconfig" not in wiring.restore_targets(Endpoints())
    bound = wiring.source(
        "ssmconfig",
        Endpoints(
            config_ssm_paths=(aws.path + "/",), config_secret_ids=aws.secret_ids, aws_client=aws.client
        ),
    )
    assert isinstance(bound, SsmConfigComponent) and bound.paths == (aws.path,)
    with pytest.raises(SourceUnreachableError, match="does not exist"):
        bound.check()


@pytest.mark.parametrize(
    ("paths", "secret_ids"),
    [(("/",), ()), (("relative/path",), ()), (("/a", "/a/b"), ()), ((), ("",)), ((), ("x", "x"))],
)
def test_bad_paths_and_secret_ids_are_configuration_errors(
    paths: tuple[str, ...], secret_ids: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigurationError):
        SsmConfigComponent(paths, secret_ids)


def test_an_aws_error_quoting_a_value_becomes_an_error_naming_only_the_code(aws: Aws) -> None:
    """SSM's validation messages quote the value sent; the component's errors carry the code alone."""
    quoting = ClientError(
        {
            "Error": {
                "Code": "ValidationException",
                "Message": f"1 validation error detected: Value '{DATABASE_PASSWORD}' at 'value' failed",
            },
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "PutParameter",
    )
    error = failure("ssmconfig", "write", f"{aws.path}/db/password", quoting)
    assert isinstance(error, SourceError) and not isinstance(error, SourceUnreachableError)
    assert str(error) == f"ssmconfig: cannot write {aws.path}/db/password: ValidationException"
    throttled = ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}, "ResponseMetadata": {}},
        "PutParameter",
    )
    assert isinstance(failure("ssmconfig", "write", aws.path, throttled), SourceUnreachableError)
