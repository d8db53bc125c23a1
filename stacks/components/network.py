"""The VPC, sized for cost.

FinOps choices: two AZs (the minimum for a highly available Redis and service); NAT gateways by stage
(one in dev, one per AZ in prod, `AppConfig.nat_gateways`) because the worker must reach the LLM API
on the internet; free gateway endpoints for DynamoDB and S3 so the busiest traffic skips the NAT's
per-GB charge. No interface endpoints (about 7 USD a month each per AZ): SQS, Secrets Manager and
the Management API go through the NAT, which is cheaper at this traffic.
"""
from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.components.log_groups import retained_log_group
from stacks.config import AppConfig


class Network(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig,
                 key: kms.IKey | None = None) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self, "Vpc",
            max_azs=config.max_azs,
            nat_gateways=config.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="app", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22),
                ec2.SubnetConfiguration(name="data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
            ],
            gateway_endpoints={
                "DynamoDb": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
            },
        )
        # Rejected traffic only: what an investigation needs, at a fraction of full flow logs' volume.
        self.vpc.add_flow_log(
            "RejectedFlows",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(retained_log_group(self, "FlowLogs", config, key)),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
