"""The uploads and configuration file system (EFS) where a Quest Board on AWS keeps them: imported by
id with its access point, and mounted into the functions that back up (read-only: ClientMount alone,
so a backup can never write there) or restore (ClientMount and ClientWrite). Nothing is created:
the file system belongs to the application."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_efs as efs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.config import StackConfig

#: What each kind of mount may do on the file system (through the access point only).
ACTIONS = {
    "read": ["elasticfilesystem:ClientMount"],
    "write": ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
}


class FilesMount(Construct):
    """``mounts["read"]`` and ``mounts["write"]``: the access point at ``config.files_mount_path``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        security_groups: list[ec2.ISecurityGroup],
    ) -> None:
        super().__init__(scope, construct_id)
        self.mounts: dict[str, lambda_.FileSystem] = {}
        if not config.uploads_file_system_id:
            return
        # The functions' own security group: the file system's mount targets must accept NFS (2049)
        # from it (the deploy section of the README says so); no rule is added to an imported group.
        file_system = efs.FileSystem.from_file_system_attributes(
            self,
            "FileSystem",
            file_system_id=config.uploads_file_system_id,
            security_group=security_groups[0],
        )
        self.access_point = efs.AccessPoint.from_access_point_attributes(
            self, "AccessPoint", access_point_id=config.uploads_access_point_id, file_system=file_system
        )
        stack = Stack.of(self)
        file_system_arn = stack.format_arn(
            service="elasticfilesystem", resource="file-system", resource_name=config.uploads_file_system_id
        )
        access_point_arn = stack.format_arn(
            service="elasticfilesystem", resource="access-point", resource_name=config.uploads_access_point_id
        )
        for access, actions in ACTIONS.items():
            self.mounts[access] = lambda_.FileSystem(
                arn=access_point_arn,
                local_mount_path=config.files_mount_path,
                policies=[
                    iam.PolicyStatement(
                        actions=actions,
                        resources=[file_system_arn],
                        conditions={"StringEquals": {"elasticfilesystem:AccessPointArn": access_point_arn}},
                    )
                ],
            )
