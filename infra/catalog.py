"""The catalog table (DynamoDB): what became of each backup run, written by the backup state machine's
last steps and read by the admin API. The manifests in S3 stay the truth of a backup; this is an index.
"""

from __future__ import annotations

from typing import Final

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

#: The variable every function that uses the catalog finds the table's name in.
TABLE_VARIABLE: Final = "BACKUP_CATALOG_TABLE"
#: Record and update a run's entry (and find it again); no Scan, no batch or table-wide action.
WRITE_ACTIONS: Final = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:GetItem",
)
READ_ACTIONS: Final = ("dynamodb:GetItem", "dynamodb:Query")
#: An entry's expiry in epoch seconds, set by its writer; DynamoDB deletes the entry after it.
TTL_ATTRIBUTE: Final = "expires_at"


class BackupCatalog(Construct):
    """One table, keyed ``pk`` / ``sk`` (strings; the item layout belongs to the code that writes it).

    Encrypted with the AWS managed key (aws/dynamodb): entries hold ids, times, sizes, statuses and
    error names, never backup data or credentials, and the only principals that may read the table
    are the functions granted here, so a customer managed key would gate the same callers twice. The
    AWS managed key still logs every use in CloudTrail, costs nothing to keep and needs no key policy.
    """

    table: dynamodb.Table

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            time_to_live_attribute=TTL_ATTRIBUTE,
            removal_policy=RemovalPolicy.RETAIN,
        )

    def add_writer(self, function: lambda_.Function) -> None:
        """The function records runs: it gets the table's name and the write actions."""
        self._connect(function, WRITE_ACTIONS)

    def add_recorder(self, function: lambda_.Function) -> None:
        """The function counts outcomes on the summary item (failures, restores): UpdateItem only."""
        self._connect(function, ("dynamodb:UpdateItem",))

    def add_reader(self, function: lambda_.Function) -> None:
        """The function looks runs up: it gets the table's name and GetItem and Query only."""
        self._connect(function, READ_ACTIONS)

    def _connect(self, function: lambda_.Function, actions: tuple[str, ...]) -> None:
        function.add_environment(TABLE_VARIABLE, self.table.table_name)
        self.table.grant(function, *actions)
