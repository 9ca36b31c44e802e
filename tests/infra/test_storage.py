"""The backup bucket: encryption, TLS only, no public access, versions, access logs, tiered lifecycle."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from tests.infra.conftest import Synthesized


def _rules(synth: Synthesized) -> dict[str, dict[str, Any]]:
    bucket = synth.resources[synth.logical_id(synth.stack.storage.bucket)]
    return {rule["Id"]: rule for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}


def _tier_rule(synth: Synthesized, tier: str) -> dict[str, Any]:
    (rule,) = [r for r in _rules(synth).values() if r.get("TagFilters") == [{"Key": "tier", "Value": tier}]]
    return rule


def test_each_tier_expires_after_its_retention_by_object_tag(synth: Synthesized) -> None:
    expected = {"incremental": 1, "daily": 7, "weekly": 30, "monthly": 365, "temp": 1}
    for tier, days in expected.items():
        rule = _tier_rule(synth, tier)
        assert rule["Status"] == "Enabled"
        assert rule["ExpirationInDays"] == days, tier
        assert "Prefix" not in rule, "a prefix cannot wildcard the hostname: tiers are matched by tag"


def test_only_monthly_sets_leave_standard_storage_after_30_days(synth: Synthesized) -> None:
    assert _tier_rule(synth, "monthly")["Transitions"] == [
        {"StorageClass": "GLACIER_IR", "TransitionInDays": 30}
    ]
    for tier in ("incremental", "daily", "weekly", "temp"):
        assert "Transitions" not in _tier_rule(synth, tier), f"{tier} must stay STANDARD (minimum durations)"


def test_incomplete_uploads_and_old_versions_are_cleaned_up(synth: Synthesized) -> None:
    everything = _rules(synth)["all-objects"]
    assert "TagFilters" not in everything and "Prefix" not in everything
    assert everything["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert everything["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7}
    assert everything["ExpiredObjectDeleteMarker"] is True
    for tier in ("temp", "incremental"):
        assert _tier_rule(synth, tier)["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}


def test_bucket_is_versioned_private_and_encrypted_with_the_bucket_key(synth: Synthesized) -> None:
    key_id = synth.logical_id(synth.stack.security.bucket_key)
    log_bucket_id = synth.logical_id(synth.stack.storage.access_log_bucket)
    synth.template.has_resource(
        "AWS::S3::Bucket",
        {
            "Properties": Match.object_like(
                {
                    "VersioningConfiguration": {"Status": "Enabled"},
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            {
                                "BucketKeyEnabled": True,
                                "ServerSideEncryptionByDefault": {
                                    "SSEAlgorithm": "aws:kms",
                                    "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
                                },
                            }
                        ]
                    },
                    "LoggingConfiguration": {
                        "DestinationBucketName": {"Ref": log_bucket_id},
                        "LogFilePrefix": "backups/",
                    },
                }
            ),
            "DeletionPolicy": "Retain",
        },
    )


def test_access_logs_go_to_a_separate_private_sse_s3_bucket(synth: Synthesized) -> None:
    log_bucket = synth.resources[synth.logical_id(synth.stack.storage.access_log_bucket)]["Properties"]
    assert log_bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ] == {"SSEAlgorithm": "AES256"}
    assert all(log_bucket["PublicAccessBlockConfiguration"].values())


def test_both_bucket_policies_deny_requests_without_tls(synth: Synthesized) -> None:
    for bucket in (synth.stack.storage.bucket, synth.stack.storage.access_log_bucket):
        synth.template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": {"Ref": synth.logical_id(bucket)},
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Principal": {"AWS": "*"},
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_object_lock_is_on_without_default_retention_so_staged_objects_stay_deletable(
    synth: Synthesized,
) -> None:
    bucket = synth.resources[synth.logical_id(synth.stack.storage.bucket)]["Properties"]
    assert bucket["ObjectLockEnabled"] is True
    assert "Rule" not in bucket.get("ObjectLockConfiguration", {}), "no default retention"


def test_the_functions_lock_objects_in_governance_mode_unless_compliance_is_chosen(
    synth: Synthesized, disabled_synth: Synthesized
) -> None:
    for synthesized, mode in ((synth, "GOVERNANCE"), (disabled_synth, "COMPLIANCE")):
        for function in synthesized.of_type("AWS::Lambda::Function").values():
            assert function["Properties"]["Environment"]["Variables"]["BACKUP_S3_OBJECT_LOCK"] == mode


def test_lifecycle_expiry_matches_the_retention_objects_are_locked_for() -> None:
    from infra.constants import TIER_EXPIRATION_DAYS
    from questboard_backup.retention import TIER_RETENTION_DAYS

    assert {tier: TIER_EXPIRATION_DAYS[tier] for tier in TIER_RETENTION_DAYS} == TIER_RETENTION_DAYS


def test_bucket_name_comes_from_context_when_given(synth: Synthesized, disabled_synth: Synthesized) -> None:
    assert "BucketName" not in synth.resources[synth.logical_id(synth.stack.storage.bucket)]["Properties"]
    bucket = disabled_synth.resources[disabled_synth.logical_id(disabled_synth.stack.storage.bucket)]
    assert bucket["Properties"]["BucketName"] == "questboard-backups-test"
