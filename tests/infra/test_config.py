"""Context settings: documented defaults, CLI strings, and one-line errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest

from infra.application import cdk_json_context
from infra.config import DEFAULTS, ContextError, StackConfig


def _context(**overrides: Any) -> dict[str, Any]:
    context = {key: value for key, value in cdk_json_context().items() if key in DEFAULTS}
    return {**context, **overrides}


def test_object_lock_is_governance_by_default_and_compliance_on_request() -> None:
    context = _context()
    del context["objectLockMode"]
    assert StackConfig.from_context(context).object_lock_mode == "GOVERNANCE"
    assert StackConfig.from_context(_context(objectLockMode="compliance")).object_lock_mode == "COMPLIANCE"
    with pytest.raises(ContextError, match="objectLockMode"):
        StackConfig.from_context(_context(objectLockMode="off"))


def test_the_infra_readme_documents_every_context_key() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "infra" / "README.md").read_text(encoding="utf-8")
    assert set(re.findall(r"^\| `(\w+)` \|", readme, re.MULTILINE)) == set(DEFAULTS)


def test_cdk_json_sets_every_documented_key() -> None:
    assert set(DEFAULTS) <= set(cdk_json_context())


def test_defaults_apply_to_optional_keys_left_out() -> None:
    context = _context()
    for key in ("hostname", "backupsEnabled", "scheduleTimezone", "fullBackupSchedule", "logLevel"):
        del context[key]
    config = StackConfig.from_context(context)
    assert config.hostname == "questboard"
    assert config.backups_enabled is True
    assert config.schedule_timezone == "Asia/Tokyo"
    assert config.full_backup_schedule == "cron(0 2 * * ? *)"
    assert config.incremental_backup_schedule == "cron(0 8,14,20 * * ? *)"
    assert config.log_level == "INFO"


def test_the_admin_api_settings_default_to_gentle_limits_and_no_web_acl() -> None:
    context = _context()
    for key in (
        "apiThrottleRate",
        "apiThrottleBurst",
        "apiAuthorizerCacheSeconds",
        "downloadUrlExpirySeconds",
        "apiWafAclArn",
    ):
        context.pop(key, None)
    config = StackConfig.from_context(context)
    assert (config.api_throttle_rate, config.api_throttle_burst) == (5, 10)
    assert config.api_authorizer_cache_seconds == 60
    assert config.download_url_expiry_seconds == 900
    assert config.api_waf_acl_arn == ""


def test_the_admin_api_numbers_accept_cli_strings() -> None:
    config = StackConfig.from_context(
        _context(
            apiThrottleRate="0.5",
            apiThrottleBurst="3",
            apiAuthorizerCacheSeconds="0",
            downloadUrlExpirySeconds="1",
        )
    )
    assert (config.api_throttle_rate, config.api_throttle_burst) == (0.5, 3)
    assert (config.api_authorizer_cache_seconds, config.download_url_expiry_seconds) == (0, 1)


@pytest.mark.parametrize(
    ("raw", "expected"), [("false", False), ("true", True), (False, False), ("0", False)]
)
def test_flags_accept_cli_strings(raw: object, expected: bool) -> None:
    assert StackConfig.from_context(_context(backupsEnabled=raw)).backups_enabled is expected


def test_lists_accept_json_from_the_cli() -> None:
    config = StackConfig.from_context(
        _context(
            securityGroupIds="sg-0123456789abcdef1,sg-0123456789abcdef2",
            subnets='[{"subnetId": "subnet-0123456789abcdef9", "availabilityZone": "eu-west-3a",'
            ' "routeTableId": "rtb-0123456789abcdef9"}]',
        )
    )
    assert config.security_group_ids == ("sg-0123456789abcdef1", "sg-0123456789abcdef2")
    assert config.subnets[0].availability_zone == "eu-west-3a"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("vpcId", "vpc-nothex!", "'vpcId' is not valid"),
        ("vpcId", None, "'vpcId' is required"),
        ("databaseSecret", "", "'databaseSecret' is required"),
        ("backupsEnabled", "maybe", "'backupsEnabled' must be true or false"),
        ("securityGroupIds", ["sg-1"], "'securityGroupIds' holds an invalid id"),
        ("subnets", [{"subnetId": "subnet-0123456789abcdef0"}], "invalid availabilityZone"),
        ("alertEmail", "not-an-address", "'alertEmail' is not valid"),
        ("logLevel", "chatty", "'logLevel' must be one of"),
        ("fullBackupSchedule", "0 2 * * *", "'fullBackupSchedule' is not valid"),
        ("apiThrottleRate", 0, "'apiThrottleRate' must be a number from 0.1 to 10000"),
        ("apiThrottleRate", "fast", "'apiThrottleRate' must be a number"),
        ("apiThrottleBurst", 0, "'apiThrottleBurst' must be a whole number from 1 to 5000"),
        ("apiThrottleBurst", 2.5, "'apiThrottleBurst' must be a whole number"),
        (
            "apiAuthorizerCacheSeconds",
            301,
            "'apiAuthorizerCacheSeconds' must be a whole number from 0 to 300",
        ),
        ("apiAuthorizerCacheSeconds", -1, "'apiAuthorizerCacheSeconds' must be a whole number"),
        ("apiAuthorizerCacheSeconds", True, "'apiAuthorizerCacheSeconds' must be a whole number"),
        ("downloadUrlExpirySeconds", 0, "'downloadUrlExpirySeconds' must be a whole number from 1 to 900"),
        (
            "downloadUrlExpirySeconds",
            "3600",
            "'downloadUrlExpirySeconds' must be a whole number from 1 to 900",
        ),
        (
            "apiWafAclArn",
            "arn:aws:wafv2:us-east-1:123456789012:global/webacl/x/1",
            "'apiWafAclArn' is not valid",
        ),
    ],
)
def test_invalid_settings_are_refused_by_name(key: str, value: object, message: str) -> None:
    context = _context(**{key: value})
    if value is None:
        del context[key]
    with pytest.raises(ContextError, match=message):
        StackConfig.from_context(context)


def test_the_monitoring_settings_default_to_a_derived_size_alarm_and_no_slack() -> None:
    context = _context()
    for key in ("expectedBackupBytes", "alertSlackWorkspaceId", "alertSlackChannelId"):
        context.pop(key, None)
    config = StackConfig.from_context(context)
    assert config.expected_backup_bytes == 0
    assert (config.alert_slack_workspace_id, config.alert_slack_channel_id) == ("", "")


def test_expected_backup_bytes_accepts_a_cli_string_and_refuses_a_negative_or_fraction() -> None:
    assert (
        StackConfig.from_context(_context(expectedBackupBytes="2000000000")).expected_backup_bytes
        == 2 * 10**9
    )
    for bad in ("-1", "1.5", "lots", True):
        with pytest.raises(ContextError, match="expectedBackupBytes"):
            StackConfig.from_context(_context(expectedBackupBytes=bad))


def test_both_slack_ids_together_configure_the_channel() -> None:
    config = StackConfig.from_context(
        _context(alertSlackWorkspaceId=" T0123ABCDEF ", alertSlackChannelId="G0123ABCDEF")
    )
    assert (config.alert_slack_workspace_id, config.alert_slack_channel_id) == ("T0123ABCDEF", "G0123ABCDEF")
