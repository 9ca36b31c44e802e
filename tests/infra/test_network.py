"""Functions run in the given private subnets, reaching AWS through VPC endpoints instead of a NAT."""

from __future__ import annotations

import json

from infra import constants as names
from infra.functions import FUNCTION_SPECS
from tests.infra.conftest import Synthesized

SUBNETS = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]


def _endpoints(synth: Synthesized) -> dict[str, dict[str, object]]:
    """Endpoints by service suffix (``kms``, ``s3``...)."""
    found = {}
    for endpoint in synth.of_type("AWS::EC2::VPCEndpoint").values():
        service = json.dumps(endpoint["Properties"]["ServiceName"]).split(".")[-1].strip('"]}')
        found[service] = endpoint["Properties"]
    return found


def test_every_api_the_functions_call_has_an_endpoint(synth: Synthesized) -> None:
    endpoints = _endpoints(synth)
    gateways = {"s3", "dynamodb"}  # the catalog table: Publish and the failure path write it
    interfaces = {"kms", "secretsmanager", "states", "monitoring", "logs", "sns"}
    # ECR's api and dkr: the Fargate path's image, pulled through the cache (its layers through S3).
    assert set(endpoints) == gateways | interfaces | {"api", "dkr"}
    assert "ecr.api" in json.dumps(endpoints["api"]["ServiceName"])
    for service in gateways:
        assert endpoints[service]["VpcEndpointType"] == "Gateway"
        assert endpoints[service]["RouteTableIds"] == ["rtb-0123456789abcdef0", "rtb-0123456789abcdef1"]
    for service, endpoint in endpoints.items():
        assert endpoint["VpcId"] == "vpc-0123456789abcdef0"
        if service not in gateways:
            assert endpoint["VpcEndpointType"] == "Interface"
            assert endpoint["PrivateDnsEnabled"] is True
            assert endpoint["SubnetIds"] == SUBNETS


def test_endpoints_accept_https_only_from_the_function_security_groups(synth: Synthesized) -> None:
    group = synth.stack.network.endpoint_security_group
    assert group is not None
    properties = synth.resources[synth.logical_id(group)]["Properties"]
    assert properties["SecurityGroupIngress"] == [
        {
            "Description": "HTTPS from the backup functions",
            "FromPort": 443,
            "ToPort": 443,
            "IpProtocol": "tcp",
            "SourceSecurityGroupId": "sg-0123456789abcdef0",
        }
    ]


def test_functions_run_in_the_given_subnets_and_security_groups(synth: Synthesized) -> None:
    functions = synth.of_type("AWS::Lambda::Function")
    assert len(functions) == len(synth.stack.functions.functions)
    for spec in FUNCTION_SPECS:
        function = functions[synth.logical_id(synth.stack.functions[spec.module])]["Properties"]
        if not spec.in_vpc:
            assert "VpcConfig" not in function, spec.module
            continue
        assert function["VpcConfig"] == {
            "SubnetIds": SUBNETS,
            "SecurityGroupIds": ["sg-0123456789abcdef0"],
        }, spec.module


def test_only_functions_that_reach_nothing_but_aws_apis_run_outside_the_vpc() -> None:
    # The admin API, its authorizer and the hourly staging watch reach nothing but AWS APIs;
    # everything that touches a database or the application's files stays in the subnets.
    assert {spec.module for spec in FUNCTION_SPECS if not spec.in_vpc} == {
        names.API,
        names.API_AUTHORIZER,
        names.STORAGE_WATCH,
    }


def test_no_vpc_or_nat_is_created(synth: Synthesized) -> None:
    for resource_type in ("AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::NatGateway", "AWS::EC2::EIP"):
        assert not synth.of_type(resource_type), resource_type


def test_endpoints_can_be_left_to_the_vpc_owner(disabled_synth: Synthesized) -> None:
    assert not disabled_synth.of_type("AWS::EC2::VPCEndpoint")
    assert not disabled_synth.of_type("AWS::EC2::SecurityGroup")
    assert disabled_synth.of_type("AWS::Lambda::Function")
