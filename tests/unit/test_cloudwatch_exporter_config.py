"""monitoring/yace.yml and monitoring/cloudwatch_exporter.yml ask CloudWatch for exactly the metrics the
functions emit, in the namespace they emit them to, with the dimensions they carry; and
docs/monitoring-cloudwatch.md names the Prometheus series each exporter makes of them.

The emitted names come from the handlers' source (``metrics.add_metric(name=...)``), so renaming a
metric in a handler fails here until both configurations and the docs follow.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import constants

ROOT = Path(__file__).resolve().parents[2]
YACE = ROOT / "monitoring" / "yace.yml"
CLOUDWATCH_EXPORTER = ROOT / "monitoring" / "cloudwatch_exporter.yml"
DOC = ROOT / "docs" / "monitoring-cloudwatch.md"
#: Powertools adds the service dimension to every metric (Metrics(service=...) in observability.py).
DEFAULT_DIMENSIONS = frozenset({"service"})


def _keyword(call: ast.Call, name: str) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    return None


def _metrics_calls(tree: ast.AST, method: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == method
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "metrics"
    ]


def emitted_metrics() -> dict[str, frozenset[str]]:
    """Every metric name a handler in lambdas/ emits, with the dimension names it carries there."""
    emitted: dict[str, frozenset[str]] = {}
    for path in sorted((ROOT / "lambdas").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            added = {_keyword(call, "name") for call in _metrics_calls(function, "add_dimension")}
            dimensions = DEFAULT_DIMENSIONS | {name for name in added if name}
            for call in _metrics_calls(function, "add_metric"):
                name = _keyword(call, "name")
                assert name, f"{path.name}: add_metric without a literal name= (the configs cannot follow it)"
                assert emitted.get(name, dimensions) == dimensions, f"{name} has two dimension sets"
                emitted[name] = frozenset(dimensions)
    return emitted


def _module_constant(path: Path, name: str) -> Any:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} defines no {name}")


def _load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def yace_name(namespace: str, metric: str, statistic: str) -> str:
    """YACE's pkg/promutil BuildMetricName for a namespace without a leading slash: ``aws_`` unless
    the namespace starts with aws, the lowercased namespace, the metric without a leading part it
    shares with the namespace, the statistic; each through PromString (snake case, ``_`` for
    punctuation)."""

    def prom_string(text: str) -> str:
        out, previous = [], ""
        for char in text:
            if char in " ,\t/\\.-:=@<>()\u201c":
                out.append("_")
            elif char == "%":
                out.append("_percent")
            else:
                if char.isupper() and (previous.islower() or previous.isdigit()):
                    out.append("_")
                out.append(char.lower())
            previous = char
        return "".join(out)

    prom_ns = prom_string(namespace.lower())
    name = prom_string(metric)
    skip = 0
    for part in prom_ns.split("_"):
        if name[skip:].startswith(part):
            skip = len(part)
    name = name[skip:].removeprefix("_")
    prefix = "" if prom_ns.startswith("aws") else "aws_"
    return f"{prefix}{prom_ns}_{name}_{prom_string(statistic)}"


def cloudwatch_exporter_name(namespace: str, metric: str, statistic: str) -> str:
    """cloudwatch_exporter's CloudWatchCollector: safeName(namespace lowercased + "_" + snake case
    metric) + "_" + the statistic in snake case (no ``aws_`` for a custom namespace)."""

    def snake(text: str) -> str:
        return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text).lower()

    def safe(text: str) -> str:
        return re.sub(r"__+", "_", re.sub(r"[^a-zA-Z0-9:_]", "_", text))

    return f"{safe(namespace.lower() + '_' + snake(metric))}_{safe(snake(statistic))}"


def test_the_handlers_emit_the_guides_metrics_to_the_stacks_namespace() -> None:
    observability = ROOT / "lambdas" / "observability.py"
    assert _module_constant(observability, "NAMESPACE") == constants.METRICS_NAMESPACE
    assert _module_constant(observability, "SERVICE") == constants.SERVICE_NAME
    emitted = emitted_metrics()
    for name in (
        "backup_last_success_timestamp",
        "backup_duration_seconds",
        "backup_size_bytes",
        "backup_failure_total",
        constants.BACKUP_SUCCESS_METRIC,
    ):
        assert name in emitted, name
    assert emitted["backup_size_bytes"] == {"service", "type"}
    assert emitted["backup_failure_total"] == {"service"}


def test_yace_asks_for_exactly_the_emitted_metrics_in_the_namespace() -> None:
    config = _load(YACE)
    assert config["apiVersion"] == "v1alpha1"
    (job,) = config["customNamespace"]
    assert job["namespace"] == constants.METRICS_NAMESPACE
    assert job["name"] and job["regions"] and job["roles"], "YACE refuses a job without these"
    names = [metric["name"] for metric in job["metrics"]]
    assert sorted(names) == sorted(emitted_metrics())
    for metric in job["metrics"]:
        assert metric.get("statistics", job.get("statistics")), metric["name"]


def test_yace_exports_the_sparse_metrics_with_their_own_time_young_enough_for_prometheus() -> None:
    (job,) = _load(YACE)["customNamespace"]
    assert job["addCloudwatchTimestamp"] is True
    assert job["length"] + job.get("delay", 0) < 3600
    assert job["period"] <= job["length"]


def test_cloudwatch_exporter_asks_for_exactly_the_emitted_metrics_and_their_dimensions() -> None:
    config = _load(CLOUDWATCH_EXPORTER)
    assert config["region"]
    emitted = emitted_metrics()
    rules = config["metrics"]
    assert {rule["aws_namespace"] for rule in rules} == {constants.METRICS_NAMESPACE}
    assert sorted(rule["aws_metric_name"] for rule in rules) == sorted(emitted)
    for rule in rules:
        # The exporter drops a metric whose dimensions are not exactly these (README: aws_dimensions).
        assert set(rule["aws_dimensions"]) == emitted[rule["aws_metric_name"]], rule["aws_metric_name"]
        assert rule["aws_statistics"], rule["aws_metric_name"]
    assert config["set_timestamp"] is True
    assert config["delay_seconds"] + config["range_seconds"] < 3600


def _series() -> list[tuple[str, str]]:
    """(YACE name, cloudwatch_exporter name) of every series the configurations produce."""
    (job,) = _load(YACE)["customNamespace"]
    yace = {
        yace_name(job["namespace"], metric["name"], statistic)
        for metric in job["metrics"]
        for statistic in metric.get("statistics", job.get("statistics", []))
    }
    exporter = {
        cloudwatch_exporter_name(rule["aws_namespace"], rule["aws_metric_name"], statistic)
        for rule in _load(CLOUDWATCH_EXPORTER)["metrics"]
        for statistic in rule["aws_statistics"]
    }
    return [
        (name, kind) for kind, names in (("yace", yace), ("cloudwatch_exporter", exporter)) for name in names
    ]


@pytest.mark.parametrize(
    ("namespace", "metric", "statistic", "expected"),
    [
        # YACE's own test cases (pkg/promutil/migrate_test.go).
        ("AWS/ElastiCache", "CPUUtilization", "Average", "aws_elasticache_cpuutilization_average"),
        (
            "Glue",
            "glue.driver.aggregate.bytesRead",
            "Average",
            "aws_glue_driver_aggregate_bytes_read_average",
        ),
        (
            "Glue",
            "aggregate.glue.jobs.bytesRead",
            "Average",
            "aws_glue_aggregate_glue_jobs_bytes_read_average",
        ),
        (
            "QuestBoardBackup",
            "backup_size_bytes",
            "Maximum",
            "aws_questboardbackup_backup_size_bytes_maximum",
        ),
    ],
)
def test_yace_naming_port(namespace: str, metric: str, statistic: str, expected: str) -> None:
    assert yace_name(namespace, metric, statistic) == expected


def test_the_docs_name_every_series_the_exporters_make() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name, kind in _series():
        assert f"`{name}`" in text, f"{kind}: {name}"
