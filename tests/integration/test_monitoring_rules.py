"""monitoring/: the alert rules, their promtool unit tests, the example Prometheus configuration and the
Grafana dashboard, checked with the real promtool (Debian's `prometheus` package, which `make test`
installs: a missing promtool fails these tests, it never skips them).

Besides `promtool check rules` and `promtool test rules`, each alert's unit tests are shown to catch a
change of its threshold (a mutated copy of alerts.yml makes them fail), every dashboard expression is
parsed by promtool (as a recording rule), and every metric and label the rules and the dashboard use
is in the metrics contract below."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts_test.yml"
CONFIG = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

# The exposition's contract (issue 12): every metric and its labels, besides Prometheus's job/instance.
CONTRACT: dict[str, set[str]] = {
    "backup_last_success_timestamp": {"type", "hostname"},
    "backup_duration_seconds": {"type", "hostname"},
    "backup_size_bytes": {"type", "hostname"},
    "backup_failure_total": {"type", "hostname"},
    "backup_last_attempt_timestamp": {"type", "hostname"},
    "backup_running": {"hostname"},
    "backup_stored_bytes": {"tier", "hostname"},
    "backup_sets": {"tier", "hostname"},
    "backup_dir_free_bytes": {"hostname"},
    "backup_dir_size_bytes": {"hostname"},
    "backup_restore_last_success_timestamp": {"hostname"},
    "backup_restore_failure_total": {"hostname"},
    "restore_drill_last_success_timestamp": {"hostname"},
    "restore_drill_duration_seconds": {"hostname"},
    "restore_drill_failure_total": {"hostname"},
}
LABEL_VALUES = {"type": {"full", "incremental"}, "tier": {"daily", "weekly", "monthly", "incremental"}}
ALERTS = {
    "BackupFailed",
    "BackupFullMissing",
    "BackupRPOExceeded",
    "BackupSlow",
    "BackupShrunk",
    "RestoreDrillOverdue",
    "RestoreDrillFailed",
    "RestoreDrillSlow",
    "BackupDiskFilling",
    "BackupBucketGrowing",
    "BackupRestoreFailed",
    "BackupMetricsAbsent",
}


def _promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if not found:
        pytest.fail("promtool is missing: `make test` installs it (Debian package `prometheus`)")
    return found


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *map(str, args)], capture_output=True, text=True, timeout=300, check=False
    )


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert [group["name"] for group in groups] == ["questboard-backup"]
    return list(groups[0]["rules"])


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in _dashboard()["panels"] for target in panel["targets"]]


# ---- promtool on the files as they are ----


def test_promtool_check_rules_passes() -> None:
    result = _run("check", "rules", "--lint=all", "--lint-fatal", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = _run("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_example_prometheus_config_is_valid(tmp_path: Path) -> None:
    assert _run("check", "config", "--syntax-only", CONFIG).returncode == 0
    # The full check also opens the token file and the rule files: a copy whose token file exists.
    config = yaml.safe_load(CONFIG.read_text())
    token = tmp_path / "questboard-backup-api.token"
    token.write_text("qbb_example_token\n")
    api = next(job for job in config["scrape_configs"] if job["job_name"] == "questboard-backup-api")
    api["authorization"]["credentials_file"] = str(token)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(RULES, tmp_path / "alerts.yml")
    result = _run("check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_the_example_config_scrapes_the_three_paths_as_documented() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["questboard-backup-api"]
    assert api["scheme"] == "https" and api["metrics_path"] == "/prod/metrics"
    assert api["authorization"]["type"] == "Bearer" and api["authorization"]["credentials_file"]
    assert "node" in jobs
    pushgateway = [job for job in jobs.values() if job.get("honor_labels")]
    assert [job["job_name"] for job in pushgateway] == ["pushgateway"]


# ---- the unit tests catch a changed threshold ----

# (alert, text of its expr or `for`, its replacement): each change must make that alert's tests fail.
# Every alert has one; the alerts with two conditions have one more, for the second condition.
MUTATIONS = [
    ("BackupFailed", "increase(backup_failure_total[1h])", "increase(backup_failure_total[5m])"),
    ("BackupFailed", "backup_failure_total > 0", "backup_failure_total > 1"),
    ("BackupFullMissing", "26 * 3600", "260 * 3600"),
    ("BackupRPOExceeded", "7 * 3600", "6 * 3600"),
    ("BackupSlow", "> 300", "> 3000"),
    ("BackupSlow", "> 3 *", "> 10 *"),
    ("BackupShrunk", "< 0.5 *", "< 0.3 *"),
    ("RestoreDrillOverdue", "35 * 86400", "36 * 86400"),
    (
        "RestoreDrillFailed",
        "increase(restore_drill_failure_total[1h])",
        "increase(restore_drill_failure_total[5m])",
    ),
    ("RestoreDrillSlow", "> 3600", "> 7200"),
    ("BackupDiskFilling", "< 0.10", "< 0.01"),
    ("BackupDiskFilling", "86400)) < 0", "86400)) < -100000"),
    ("BackupBucketGrowing", "> 2 *", "> 3 *"),
    ("BackupBucketGrowing", "offset 14d", "offset 7d"),
    (
        "BackupRestoreFailed",
        "increase(backup_restore_failure_total[1h])",
        "increase(backup_restore_failure_total[5m])",
    ),
    ("BackupMetricsAbsent", "for=1h", "for=2h"),
]


def _unit_tests_of(alert: str) -> dict[str, Any]:
    """alerts_test.yml reduced to the test groups that check `alert` (promtool runs them faster)."""
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["tests"] = [
        group
        for group in tests["tests"]
        if any(check["alertname"] == alert for check in group.get("alert_rule_test", []))
    ]
    assert tests["tests"], f"no unit test checks {alert}"
    return dict(tests)


def test_every_alert_has_a_mutation_below() -> None:
    assert {alert for alert, _, _ in MUTATIONS} == ALERTS == {rule["alert"] for rule in _rules()}


@pytest.mark.parametrize(
    ("alert", "before", "after"), MUTATIONS, ids=[f"{a}: {b} -> {c}" for a, b, c in MUTATIONS]
)
def test_the_unit_tests_fail_when_a_threshold_changes(
    alert: str, before: str, after: str, tmp_path: Path
) -> None:
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(_unit_tests_of(alert)))
    document = yaml.safe_load(RULES.read_text())
    rule = next(rule for rule in document["groups"][0]["rules"] if rule["alert"] == alert)
    if before.startswith("for="):
        assert rule["for"] == before.removeprefix("for=")
        rule["for"] = after.removeprefix("for=")
    else:
        assert rule["expr"].count(before) == 1, (before, rule["expr"])
        rule["expr"] = rule["expr"].replace(before, after)
    document["groups"][0]["rules"] = [rule]  # the others only cost time here
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document))
    assert _run("check", "rules", tmp_path / "alerts.yml").returncode == 0
    # The same groups pass on the real rules (test_promtool_unit_tests_of_the_alerts_pass) and fail here.
    failing = _run("test", "rules", tmp_path / "alerts_test.yml")
    assert failing.returncode != 0, failing.stdout
    assert "FAILED" in failing.stdout + failing.stderr
    assert f"alertname: {alert}," in failing.stdout + failing.stderr


def test_each_alert_is_tested_firing_and_quiet() -> None:
    checks = [
        check
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for check in group["alert_rule_test"]
    ]
    for alert in ALERTS:
        mine = [check for check in checks if check["alertname"] == alert]
        assert any(check.get("exp_alerts") for check in mine), f"{alert} is never tested firing"
        assert any(not check.get("exp_alerts") for check in mine), f"{alert} is never tested quiet"


# ---- the rules' content ----


def test_every_alert_has_a_severity_a_summary_a_description_and_the_runbook() -> None:
    for rule in _rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), rule["alert"]
        assert "docs/dr-runbook.md" in annotations["description"], rule["alert"]
        assert annotations["runbook_url"] == "docs/dr-runbook.md", rule["alert"]
    assert (MONITORING.parent / "docs" / "dr-runbook.md").exists()


def test_alert_annotations_name_the_host_and_type_they_keep() -> None:
    for rule in _rules():
        kept = _kept_labels(rule["expr"])
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        for label in kept:
            assert "{{ $labels." + label + " }}" in text, (rule["alert"], label)


def _kept_labels(expr: str) -> set[str]:
    """The labels of the outermost aggregations: what an alert carries besides severity."""
    if expr.strip().startswith("absent("):
        return set()
    outer = re.findall(r"\bby\s*\(([^)]*)\)", expr)
    assert outer, expr
    return {label.strip() for label in outer[0].split(",")}


# ---- the Grafana dashboard ----


def test_the_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    assert dashboard["title"] and dashboard["uid"] == "questboard-backup"
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert {panel["type"] for panel in panels} <= {"timeseries", "stat", "table"}
    areas: list[tuple[int, int, int, int]] = []
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel[
            "title"
        ]
        for x, y, w, h in areas:
            overlaps = (
                grid["x"] < x + w
                and x < grid["x"] + grid["w"]
                and grid["y"] < y + h
                and y < grid["y"] + grid["h"]
            )
            assert not overlaps, f"{panel['title']} overlaps another panel"
        areas.append((grid["x"], grid["y"], grid["w"], grid["h"]))
        assert panel["title"] and panel["datasource"] == datasource, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == datasource, panel["title"]


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = "\n".join(_dashboard_exprs())
    for needle in (
        "time() - max by (hostname, type) (backup_last_success_timestamp",
        "backup_duration_seconds",
        "backup_size_bytes",
        "max by (hostname, tier) (backup_stored_bytes",
        "max by (hostname, tier) (backup_sets",
        "increase(backup_failure_total",
        "backup_dir_free_bytes",
        "backup_running",
    ):
        assert needle in exprs, needle


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    rules = tmp_path / "dashboard.yml"
    exprs = _dashboard_exprs()
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": _recording(exprs)}]}))
    result = _run("check", "rules", rules)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
    # The check does fail on a broken expression.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": _recording([*exprs, exprs[0] + ")"])}]})
    )
    assert _run("check", "rules", broken).returncode != 0


def _recording(exprs: list[str]) -> list[dict[str, str]]:
    """Each expression as a recording rule; Grafana's interval variables become a plain duration."""
    grafana = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}
    rules = []
    for number, expr in enumerate(exprs):
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:expr_{number}", "expr": expr})
    return rules


# ---- metric names and labels against the contract ----

_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
_KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan"}


def _selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, its `{...}` matchers) of every selector in a PromQL expression."""
    bare = _GROUPING.sub(" ", expr)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    found = []
    for match in _SELECTOR.finditer(bare):
        name, matchers = match.group(1), match.group(2) or ""
        if name in _KEYWORDS or bare[match.end(1) :].lstrip().startswith("("):
            continue  # a keyword or a function (numbers and durations such as 1e9 or 7d never match)
        found.append((name, matchers))
    return found


def _aggregated(expr: str) -> list[tuple[set[str], str]]:
    """(labels, argument) of every `agg by (labels) (argument)`: the argument by matching parentheses."""
    found = []
    for match in re.finditer(r"\bby\s*\(([^)]*)\)\s*\(", expr):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(expr[end], 0)
            end += 1
        found.append(({label.strip() for label in match.group(1).split(",")}, expr[match.end() : end - 1]))
    return found


def _all_exprs() -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"]) for rule in _rules()] + [
        (f"dashboard {number}", expr) for number, expr in enumerate(_dashboard_exprs())
    ]


def test_the_selector_parser_of_these_tests() -> None:
    expr = 'time() - max by (hostname, type) (backup_size_bytes{type="full"} offset 7d) > 1e9 and on (hostname) up'
    assert _selectors(expr) == [("backup_size_bytes", '{type="full"}'), ("up", "")]
    assert _aggregated("max by (a) (x + (y))") == [({"a"}, "x + (y)")]


def test_every_metric_the_rules_and_the_dashboard_use_is_in_the_contract() -> None:
    used: set[str] = set()
    for where, expr in _all_exprs():
        for name, matchers in _selectors(expr):
            assert name in CONTRACT, f"{where}: {name} is not an exported metric"
            used.add(name)
            for label, operator, value in _MATCHER.findall(matchers):
                assert label in CONTRACT[name], f"{where}: {name} has no label {label}"
                if operator == "=" and label in LABEL_VALUES:
                    assert value in LABEL_VALUES[label], f"{where}: {label}={value!r}"
    assert used == set(CONTRACT), f"never shown or alerted on: {set(CONTRACT) - used}"
    variables = _dashboard()["templating"]["list"]
    for variable in variables:
        if variable["type"] == "query":
            query = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"])
            assert query, variable["query"]
            metric, label = query.groups()
            assert label in CONTRACT[metric], variable["name"]


def test_every_aggregation_keeps_only_labels_its_metrics_have() -> None:
    for where, expr in _all_exprs():
        for labels, argument in _aggregated(expr):
            for name, _ in _selectors(argument):
                assert labels <= CONTRACT[name], f"{where}: {name} has no label {labels - CONTRACT[name]}"
        for kind, labels in _GROUPING.findall(expr):
            if kind in {"on", "ignoring"}:
                assert {label.strip() for label in labels.split(",")} <= {"hostname", "type", "tier"}, where


def test_the_contract_the_rules_and_dashboard_are_checked_against_is_what_the_exposition_renders() -> None:
    """Every metric of the contract (but the drill's, which issue 13 adds) is rendered with exactly
    its labels, from an exposition with every field filled: renaming one in metrics.py fails here."""
    from prometheus_client.parser import text_string_to_metric_families

    from questboard_backup.metrics import BackupMetrics, LastRun, render

    full = BackupMetrics(
        hostname="h",
        last_success={"full": LastRun(1.0, 2.0, 3), "incremental": LastRun(1.0, 2.0, 3)},
        last_attempt={"full": 1.0, "incremental": 1.0},
        failures={"full": 1},
        running=True,
        tiers={"daily": (1, 2)},
        dir_space=(1, 2),
        restore_last_success=1.0,
        restore_failures=0,
    )
    rendered = {
        sample.name: set(sample.labels)
        for family in text_string_to_metric_families(render(full).decode())
        for sample in family.samples
    }
    expected = {name: labels for name, labels in CONTRACT.items() if not name.startswith("restore_drill_")}
    assert rendered == expected
