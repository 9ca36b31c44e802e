"""KMS, SNS and Scheduler failures raise their own error classes, transient ones apart, never storage errors.

moto plays the services; botocore's Stubber, on a real client, answers with the error codes moto cannot
produce (throttling, access denied), and a ``before-send`` hook stands in for a network that fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber
from moto import mock_aws

from questboard_backup.aws.kms import KmsKeyWrapper
from questboard_backup.aws.scheduler import DeployedSchedules, schedule_name
from questboard_backup.aws.sns import SnsAlerts
from questboard_backup.errors import (
    AlertError,
    ConfigurationError,
    IntegrityError,
    KeyServiceError,
    SchedulerError,
    StorageError,
    TransientAlertError,
    TransientKeyServiceError,
)

REGION = "ap-northeast-1"
KEY_ID = "arn:aws:kms:ap-northeast-1:123456789012:key/0b5e6f2a-7c41-4d39-9a8e-1f2d3c4b5a69"
TOPIC_ARN = "arn:aws:sns:ap-northeast-1:123456789012:questboard-backup-alerts"
BACKUP_ID = "questboard_full_20240101_020000"
WRAPPED = {"scheme": "aws-kms", "key_id": KEY_ID, "ciphertext": "AAECAwQ="}


@pytest.fixture(autouse=True)
def _fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def client(service: str) -> Any:
    """A real client that makes one attempt: the errors below reach the adapter as they come."""
    return boto3.client(service, region_name=REGION, config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture
def stubbed_kms() -> Iterator[tuple[Any, Stubber]]:
    kms = client("kms")
    with Stubber(kms) as stubber:
        yield kms, stubber
        stubber.assert_no_pending_responses()


def call_kms(wrapper: KmsKeyWrapper, operation: str) -> None:
    if operation == "generate_data_key":
        wrapper.generate(BACKUP_ID)
    else:
        wrapper.unwrap(WRAPPED, BACKUP_ID)


def unreachable(service: str) -> Any:
    """A client whose every request fails to connect, as when the endpoint cannot be reached."""
    failing = client(service)

    def refuse(**_: object) -> None:
        raise EndpointConnectionError(endpoint_url=f"https://{service}.{REGION}.amazonaws.com/")

    failing.meta.events.register("before-send", refuse)
    return failing


#: Client method -> the KMS action the error message names.
KMS_OPERATIONS = {"generate_data_key": "GenerateDataKey", "decrypt": "Decrypt"}
KMS_TRANSIENT_CODES = ["ThrottlingException", "KMSInternalException", "DependencyTimeoutException"]
KMS_PERMANENT_CODES = ["AccessDeniedException", "DisabledException", "KMSInvalidStateException"]


@pytest.mark.parametrize("operation", KMS_OPERATIONS)
@pytest.mark.parametrize("code", KMS_TRANSIENT_CODES)
def test_kms_throttling_and_internal_errors_are_transient_key_service_errors(
    stubbed_kms: tuple[Any, Stubber], operation: str, code: str
) -> None:
    kms, stubber = stubbed_kms
    stubber.add_client_error(operation, service_error_code=code, http_status_code=400)
    with pytest.raises(TransientKeyServiceError) as caught:
        call_kms(KmsKeyWrapper(KEY_ID, kms), operation)
    assert not isinstance(caught.value, StorageError)
    assert "KMS" in str(caught.value) and code in str(caught.value) and KEY_ID in str(caught.value)


@pytest.mark.parametrize("operation", KMS_OPERATIONS)
@pytest.mark.parametrize("code", KMS_PERMANENT_CODES)
def test_kms_refusals_are_permanent_key_service_errors(
    stubbed_kms: tuple[Any, Stubber], operation: str, code: str
) -> None:
    kms, stubber = stubbed_kms
    stubber.add_client_error(
        operation, service_error_code=code, service_message="not allowed\nsecond line", http_status_code=400
    )
    with pytest.raises(KeyServiceError) as caught:
        call_kms(KmsKeyWrapper(KEY_ID, kms), operation)
    assert not isinstance(caught.value, (TransientKeyServiceError, StorageError))
    action = KMS_OPERATIONS[operation]
    assert str(caught.value) == f"KMS {action} with key {KEY_ID} failed: {code} (not allowed)"


def test_kms_server_errors_without_a_known_code_are_transient(stubbed_kms: tuple[Any, Stubber]) -> None:
    kms, stubber = stubbed_kms
    stubber.add_client_error("generate_data_key", service_error_code="Unknown", http_status_code=503)
    with pytest.raises(TransientKeyServiceError):
        KmsKeyWrapper(KEY_ID, kms).generate(BACKUP_ID)


@pytest.mark.parametrize("operation", KMS_OPERATIONS)
def test_kms_out_of_reach_is_a_transient_key_service_error(operation: str) -> None:
    with pytest.raises(TransientKeyServiceError, match="EndpointConnectionError"):
        call_kms(KmsKeyWrapper(KEY_ID, unreachable("kms")), operation)


def test_a_tampered_wrapped_key_is_an_integrity_error_not_a_key_service_error(
    stubbed_kms: tuple[Any, Stubber],
) -> None:
    kms, stubber = stubbed_kms
    stubber.add_client_error("decrypt", service_error_code="InvalidCiphertextException")
    with pytest.raises(IntegrityError):
        KmsKeyWrapper(KEY_ID, kms).unwrap(WRAPPED, BACKUP_ID)


def test_a_key_id_naming_no_key_is_a_configuration_error() -> None:
    with mock_aws(), pytest.raises(ConfigurationError, match=r"BACKUP_KMS_KEY_ID .*NotFoundException"):
        KmsKeyWrapper("alias/no-such-key", client("kms")).generate(BACKUP_ID)


def test_an_alert_to_a_missing_topic_is_a_permanent_alert_error() -> None:
    with mock_aws(), pytest.raises(AlertError) as caught:
        SnsAlerts(TOPIC_ARN, client("sns")).publish("subject", "message")
    assert not isinstance(caught.value, (TransientAlertError, StorageError))
    assert str(caught.value).startswith(f"SNS Publish to {TOPIC_ARN} failed: NotFound")


def test_an_alert_to_an_existing_topic_is_published() -> None:
    with mock_aws():
        sns = client("sns")
        topic = sns.create_topic(Name="questboard-backup-alerts")["TopicArn"]
        SnsAlerts(topic, sns).publish("subject", "message")


@pytest.mark.parametrize(("code", "status"), [("Throttled", 400), ("InternalError", 500)])
def test_a_throttled_or_failing_sns_is_a_transient_alert_error(code: str, status: int) -> None:
    sns = client("sns")
    with Stubber(sns) as stubber:
        stubber.add_client_error("publish", service_error_code=code, http_status_code=status)
        with pytest.raises(TransientAlertError, match=f"SNS Publish .* failed: {code}") as caught:
            SnsAlerts(TOPIC_ARN, sns).publish("subject", "message")
    assert not isinstance(caught.value, StorageError)


def test_sns_out_of_reach_is_a_transient_alert_error() -> None:
    with pytest.raises(TransientAlertError, match="EndpointConnectionError"):
        SnsAlerts(TOPIC_ARN, unreachable("sns")).publish("subject", "message")


@pytest.mark.parametrize("code", ["AccessDeniedException", "ThrottlingException"])
def test_a_scheduler_refusing_to_show_the_schedules_is_a_scheduler_error(code: str) -> None:
    scheduler = client("scheduler")
    with Stubber(scheduler) as stubber:
        stubber.add_client_error("get_schedule", service_error_code=code)
        with pytest.raises(
            SchedulerError, match=f"GetSchedule {schedule_name('prod', 'full')} failed: {code}"
        ) as caught:
            DeployedSchedules(scheduler, "prod").show()
    assert not isinstance(caught.value, StorageError)


def test_a_scheduler_refusing_to_enable_a_schedule_is_a_scheduler_error() -> None:
    scheduler = client("scheduler")
    deployed = {
        "Name": schedule_name("prod", "full"),
        "ScheduleExpression": "cron(0 2 * * ? *)",
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "Target": {"Arn": "arn:aws:states:ap-northeast-1:123456789012:stateMachine:backup",
                   "RoleArn": "arn:aws:iam::123456789012:role/scheduler"},
        "State": "DISABLED",
    }  # fmt: skip
    with Stubber(scheduler) as stubber:
        stubber.add_response("get_schedule", deployed)
        stubber.add_client_error("update_schedule", service_error_code="AccessDeniedException")
        with pytest.raises(SchedulerError, match=r"UpdateSchedule .*-full failed: AccessDeniedException"):
            DeployedSchedules(scheduler, "prod").enable()


def test_a_scheduler_out_of_reach_is_a_scheduler_error() -> None:
    with pytest.raises(SchedulerError, match="EndpointConnectionError"):
        DeployedSchedules(unreachable("scheduler"), "prod").show()
