"""ElastiCache Redis: connection registry, context cache, rate limits and the shared breaker state.

TLS in transit, encryption at rest, an AUTH token generated in Secrets Manager (never in a template),
and in prod a replica in a second AZ with automatic failover.
"""
from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from stacks.config import AppConfig

REDIS_PORT = 6379


@dataclass(frozen=True)
class RedisEndpoint:
    """How code reaches Redis: a URL, and on AWS the VPC, the client security group and the AUTH token."""

    url: str
    vpc: ec2.IVpc | None = None
    client_security_group: ec2.ISecurityGroup | None = None
    auth_secret: secretsmanager.ISecret | None = None


class RedisCache(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, vpc: ec2.IVpc) -> None:
        super().__init__(scope, construct_id)
        # Code that may talk to Redis joins this group; only it is allowed in.
        self.client_security_group = ec2.SecurityGroup(
            self, "ClientSecurityGroup", vpc=vpc, description="cloud-ia Redis clients")
        server_group = ec2.SecurityGroup(
            self, "ServerSecurityGroup", vpc=vpc, description="cloud-ia Redis", allow_all_outbound=False)
        server_group.add_ingress_rule(
            self.client_security_group, ec2.Port.tcp(REDIS_PORT), "Redis from cloud-ia functions and worker")

        self.auth_secret = secretsmanager.Secret(
            self, "AuthToken",
            description="cloud-ia Redis AUTH token",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                # ElastiCache accepts 16-128 printable characters, without @, " or /.
                password_length=64, exclude_punctuation=True),
        )
        subnets = elasticache.CfnSubnetGroup(
            self, "Subnets",
            description="cloud-ia Redis (isolated subnets)",
            subnet_ids=vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids,
        )
        self.replication_group = elasticache.CfnReplicationGroup(
            self, "ReplicationGroup",
            replication_group_description="cloud-ia sessions, context cache and breaker state",
            engine="redis",
            engine_version="7.1",
            cache_node_type="cache.t4g.micro" if not config.is_prod else "cache.t4g.small",
            # prod: a replica in another AZ and automatic failover; dev: one node (cost).
            num_cache_clusters=2 if config.is_prod else 1,
            automatic_failover_enabled=config.is_prod,
            multi_az_enabled=config.is_prod,
            transit_encryption_enabled=True,
            at_rest_encryption_enabled=True,
            auth_token=self.auth_secret.secret_value.unsafe_unwrap(),  # a dynamic reference, resolved by CloudFormation
            cache_subnet_group_name=subnets.ref,
            security_group_ids=[server_group.security_group_id],
            port=REDIS_PORT,
            snapshot_retention_limit=1 if config.is_prod else 0,
        )
        NagSuppressions.add_resource_suppressions(self.replication_group, [
            NagPackSuppression(id="AwsSolutions-AEC5", reason=(
                "A non-default port hides nothing here: only the client security group can connect, "
                "from inside the VPC, over TLS and with the AUTH token.")),
            *([] if config.is_prod else [NagPackSuppression(id="AwsSolutions-AEC4", reason=(
                "dev runs a single node for cost; prod runs a replica in a second AZ with automatic "
                "failover (AppConfig.is_prod)."))]),
        ])
        NagSuppressions.add_resource_suppressions(self.auth_secret, [NagPackSuppression(
            id="AwsSolutions-SMG4", reason=(
                "ElastiCache has no managed rotation for AUTH tokens: a rotation must change the "
                "replication group (AuthTokenUpdateStrategy ROTATE) in step; rotate by redeploying."))])
        address = self.replication_group.attr_primary_end_point_address
        self.endpoint = RedisEndpoint(
            url=f"rediss://{Token.as_string(address)}:{REDIS_PORT}/0",
            vpc=vpc,
            client_security_group=self.client_security_group,
            auth_secret=self.auth_secret,
        )
