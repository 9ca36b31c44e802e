"""One factory builds every function: runtime, architecture, size, tracing, logs, layers, environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra import constants as names
from infra.functions import CODE_ASSET_EXCLUDE, FUNCTION_SPECS, REPO_ROOT, LayerNotBuiltError, LayerPaths
from tests.infra.conftest import Synthesized

DOCUMENTED_MODULES = {
    names.BACKUP_START,
    names.BACKUP_PREPARE,
    names.BACKUP_DUMP,
    names.BACKUP_SEAL,
    names.BACKUP_VERIFY,
    names.BACKUP_PROMOTE,
    names.BACKUP_PUBLISH,
    names.BACKUP_RELEASE,
    names.BACKUP_FAILURE,
    names.RESTORE_RESOLVE,
    names.RESTORE_VALIDATE,
    names.RESTORE_COMPONENT,
    names.RESTORE_SWAP,
    names.RESTORE_VERIFY,
    names.RESTORE_REPORT,
    names.RESTORE_FAILURE,
    names.API,
    names.API_AUTHORIZER,
    names.STORAGE_WATCH,
}
#: Behind API Gateway, which waits 29 seconds for an answer (tests/infra/test_api.py).
API_MODULES = {names.API, names.API_AUTHORIZER}


def _function(synth: Synthesized, module: str) -> dict[str, Any]:
    return dict(synth.resources[synth.logical_id(synth.stack.functions[module])]["Properties"])


def test_every_documented_function_exists_once(synth: Synthesized) -> None:
    assert set(synth.stack.functions.functions) == DOCUMENTED_MODULES
    handlers = sorted(f["Properties"]["Handler"] for f in synth.of_type("AWS::Lambda::Function").values())
    assert handlers == sorted(f"lambdas.{module}.handler" for module in DOCUMENTED_MODULES)


def test_every_handler_names_a_callable_in_the_code_asset(synth: Synthesized) -> None:
    import importlib

    for function in synth.of_type("AWS::Lambda::Function").values():
        module_name, attribute = function["Properties"]["Handler"].rsplit(".", 1)
        if not module_name.startswith("lambdas."):
            continue  # CDK's own helper functions (log retention, bucket notifications)
        assert callable(getattr(importlib.import_module(module_name), attribute)), module_name


def test_all_functions_share_runtime_architecture_tracing_and_code(synth: Synthesized) -> None:
    functions = [f["Properties"] for f in synth.of_type("AWS::Lambda::Function").values()]
    assert {f["Runtime"] for f in functions} == {"python3.12"}
    assert {tuple(f["Architectures"]) for f in functions} == {("arm64",)}
    assert {f["TracingConfig"]["Mode"] for f in functions} == {"Active"}
    assert len({f["Code"]["S3Key"] for f in functions}) == 1, "one code asset for every function"
    assert {len(f["Layers"]) for f in functions} == {2}


def test_dumps_and_component_restores_get_15_minutes_and_3008_mb(synth: Synthesized) -> None:
    for module in (names.BACKUP_DUMP, names.RESTORE_COMPONENT):
        function = _function(synth, module)
        assert (function["Timeout"], function["MemorySize"]) == (900, 3008), module
        assert function["EphemeralStorage"] == {"Size": 512}, "nothing is staged on disk"


def test_bookkeeping_functions_are_small_and_short(synth: Synthesized) -> None:
    for module in DOCUMENTED_MODULES - {names.BACKUP_DUMP, names.RESTORE_COMPONENT} - API_MODULES:
        function = _function(synth, module)
        assert 60 <= function["Timeout"] <= 300, module
        assert function["MemorySize"] <= 1769, module
        assert function["EphemeralStorage"] == {"Size": 512}, module


def test_every_function_gets_the_engine_and_powertools_settings(synth: Synthesized) -> None:
    expected = {
        "POWERTOOLS_SERVICE_NAME": names.SERVICE_NAME,
        "POWERTOOLS_METRICS_NAMESPACE": "QuestBoardBackup",
        "LOG_LEVEL": "INFO",
        "BACKUP_S3_BUCKET": {"Ref": synth.logical_id(synth.stack.storage.bucket)},
        "BACKUP_HOSTNAME": "questboard",
        "BACKUP_KMS_KEY_ID": {"Fn::GetAtt": [synth.logical_id(synth.stack.security.backup_key), "Arn"]},
        "BACKUP_S3_KMS_KEY_ID": {"Fn::GetAtt": [synth.logical_id(synth.stack.security.bucket_key), "Arn"]},
        "BACKUP_ENABLED": "true",
        "ALERT_TOPIC_ARN": {"Ref": synth.logical_id(synth.stack.alerts.topic)},
    }
    for function in synth.of_type("AWS::Lambda::Function").values():
        variables = function["Properties"]["Environment"]["Variables"]
        assert {key: variables.get(key) for key in expected} == expected
        assert "database-url" in str(variables["DATABASE_SECRET_ARN"])
        assert "redis-url" in str(variables["REDIS_SECRET_ARN"])


def test_disabled_backups_reach_the_functions_and_no_redis_secret_is_empty(
    disabled_synth: Synthesized,
) -> None:
    variables = _function(disabled_synth, names.BACKUP_PREPARE)["Environment"]["Variables"]
    assert variables["BACKUP_ENABLED"] == "false"
    assert variables["REDIS_SECRET_ARN"] == ""
    assert variables["DATABASE_SECRET_ARN"].endswith(":secret:questboard/db-AbCdEf")


def test_each_function_logs_to_its_own_group_kept_three_months(synth: Synthesized) -> None:
    groups = synth.of_type("AWS::Logs::LogGroup")
    for module in DOCUMENTED_MODULES:
        group_id = _function(synth, module)["LoggingConfig"]["LogGroup"]["Ref"]
        assert groups[group_id]["Properties"]["RetentionInDays"] == 90, module
    assert {g["Properties"]["RetentionInDays"] for g in groups.values()} == {90}
    assert len(groups) == len(DOCUMENTED_MODULES) + 4, (
        "one per function, state machine, the API's access log and the Fargate tasks"
    )


def test_layers_are_for_python_3_12_on_arm64(synth: Synthesized) -> None:
    layers = synth.of_type("AWS::Lambda::LayerVersion")
    assert len(layers) == 2
    for layer in layers.values():
        assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
        assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


def test_synth_refuses_missing_layers_and_says_to_run_make_layers(tmp_path: Path) -> None:
    with pytest.raises(LayerNotBuiltError, match="run `make layers` first"):
        LayerPaths(python_deps=tmp_path / "python", pg_tools=tmp_path / "pgtools").check()


def test_code_asset_holds_only_the_handlers_and_the_engine(synth: Synthesized) -> None:
    outdir = synth.template_path.parent
    (asset,) = [
        path
        for path in outdir.glob("asset.*")
        if path.is_dir() and _function(synth, names.BACKUP_DUMP)["Code"]["S3Key"].startswith(path.name[6:])
    ]
    top_level = sorted(path.name for path in asset.iterdir())
    assert top_level == ["lambdas", "questboard_backup"], CODE_ASSET_EXCLUDE
    assert not list(asset.rglob("__pycache__"))
    for spec in FUNCTION_SPECS:
        if (REPO_ROOT / "lambdas" / f"{spec.module}.py").exists():
            assert (asset / "lambdas" / f"{spec.module}.py").exists(), spec.module


def test_the_functions_follow_the_schedules_time_zone_for_the_tier_rule(
    synth: Synthesized, disabled_synth: Synthesized
) -> None:
    for synthesized, zone in ((synth, "Asia/Tokyo"), (disabled_synth, "Europe/Paris")):
        for function in synthesized.of_type("AWS::Lambda::Function").values():
            assert function["Properties"]["Environment"]["Variables"]["BACKUP_TIMEZONE"] == zone
