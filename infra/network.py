"""The existing VPC, subnets and security groups (imported by id: synth makes no AWS lookups), and
the VPC endpoints the functions need so that they run in private subnets without a NAT gateway.
"""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from infra.config import StackConfig

#: The AWS APIs reached from inside the VPC: KMS (data keys), Secrets Manager (credentials), Step
#: Functions (functions that start executions, such as an admin API), CloudWatch metrics and Logs,
#: SNS (the failure path publishes). Lambda itself ships logs and X-Ray traces outside the VPC.
FARGATE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
}
INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "StepFunctions": ec2.InterfaceVpcEndpointAwsService.STEP_FUNCTIONS,
    "Monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Sns": ec2.InterfaceVpcEndpointAwsService.SNS,
}


class Network(Construct):
    """Where the functions run: the given private subnets with the given security groups."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_groups: list[ec2.ISecurityGroup]
    endpoint_security_group: ec2.SecurityGroup | None

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        zones = sorted({subnet.availability_zone for subnet in config.subnets})
        self.vpc = ec2.Vpc.from_vpc_attributes(self, "Vpc", vpc_id=config.vpc_id, availability_zones=zones)
        self.subnets = ec2.SubnetSelection(
            subnets=[
                ec2.Subnet.from_subnet_attributes(
                    self,
                    f"Subnet{index}",
                    subnet_id=subnet.subnet_id,
                    availability_zone=subnet.availability_zone,
                    route_table_id=subnet.route_table_id,
                )
                for index, subnet in enumerate(config.subnets)
            ]
        )
        # Imported immutable: the operator owns these groups (and the database groups' ingress).
        self.security_groups = [
            ec2.SecurityGroup.from_security_group_id(self, f"SecurityGroup{index}", group_id, mutable=False)
            for index, group_id in enumerate(config.security_group_ids)
        ]
        self.endpoint_security_group = None
        if config.create_vpc_endpoints:
            self._add_endpoints()

    def _add_endpoints(self) -> None:
        # Gateway endpoints cost nothing: S3 (the backups) and DynamoDB (the catalog table, which
        # Publish and the failure path write).
        self.vpc.add_gateway_endpoint(
            "S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.subnets]
        )
        self.vpc.add_gateway_endpoint(
            "DynamoDbEndpoint", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB, subnets=[self.subnets]
        )
        group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="Quest Board Backup: HTTPS from the backup functions to the VPC endpoints",
            allow_all_outbound=False,
        )
        for function_group in self.security_groups:
            group.add_ingress_rule(
                ec2.Peer.security_group_id(function_group.security_group_id),
                ec2.Port.tcp(443),
                "HTTPS from the backup functions",
            )
        services = dict(INTERFACE_ENDPOINTS)
        if self._config.component_runtime != "lambda":
            # The Fargate path's image, pulled through the ECR cache (its layers come through S3).
            services.update(FARGATE_ENDPOINTS)
        for name, service in services.items():
            self.vpc.add_interface_endpoint(
                f"{name}Endpoint",
                service=service,
                subnets=self.subnets,
                security_groups=[group],
                private_dns_enabled=True,
                open=False,  # no VPC-wide ingress: only the functions' groups, added above
            )
        self.endpoint_security_group = group
