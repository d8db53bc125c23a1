"""ElastiCache Redis: connection registry, context cache, rate limits and the shared breaker state.

TLS in transit, encryption at rest, an AUTH token generated in Secrets Manager (never in a template)
and rotated every `AUTH_TOKEN_ROTATION` by a rotation function (`redis_rotation/handler.py`), and in
prod a replica in a second AZ with automatic failover.

The token rather than ElastiCache IAM authentication: IAM auth would need a user group with a
`default` user, and code that signs a fresh token for every connection (and reconnects within the 12
hours ElastiCache keeps an IAM-authenticated connection), more than a small change of
`cloudia/redis_client.py`. A rotation uses ElastiCache's ROTATE strategy, which keeps the previous
token valid beside the new one until the next rotation: a process that re-reads the secret at least
once per rotation period never fails to authenticate.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import ArnFormat, Duration, Stack, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from stacks.components.grants import grant_secret
from stacks.components.lambda_code import ARCHITECTURE, RUNTIME, runtime_suppression
from stacks.components.log_groups import retained_log_group
from stacks.config import AppConfig

REDIS_PORT = 6379
AUTH_TOKEN_ROTATION = Duration.days(30)
ROTATION_CODE = Path(__file__).resolve().parent / "redis_rotation"
# testSecret waits for the group to apply the new token, a few minutes at most.
ROTATION_TIMEOUT = Duration.minutes(5)


@dataclass(frozen=True)
class RedisEndpoint:
    """How code reaches Redis: a URL, and on AWS the VPC, the client security group and the AUTH token."""

    url: str
    vpc: ec2.IVpc | None = None
    client_security_group: ec2.ISecurityGroup | None = None
    auth_secret: secretsmanager.ISecret | None = None


class RedisCache(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, vpc: ec2.IVpc,
                 key: kms.IKey | None = None) -> None:
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
            # prod: the data key (keys.py). FinOps, dev (None): the AWS-managed aws/secretsmanager key.
            encryption_key=key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                # ElastiCache accepts 16-128 printable characters, without @, ", / or % (the rotation
                # makes its tokens the same way: letters and digits).
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
        self.rotation = self._rotate_auth_token(config, key)
        address = self.replication_group.attr_primary_end_point_address
        self.endpoint = RedisEndpoint(
            url=f"rediss://{Token.as_string(address)}:{REDIS_PORT}/0",
            vpc=vpc,
            client_security_group=self.client_security_group,
            auth_secret=self.auth_secret,
        )

    def _rotate_auth_token(self, config: AppConfig, key: kms.IKey | None) -> lambda_.Function:
        """The AUTH token's rotation: a function outside the VPC (it calls only the Secrets Manager and
        ElastiCache APIs), run by Secrets Manager every `AUTH_TOKEN_ROTATION`."""
        rotation = lambda_.Function(
            self, "AuthTokenRotation",
            description="cloud-ia: rotates the Redis AUTH token (ElastiCache ROTATE strategy)",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=lambda_.Code.from_asset(str(ROTATION_CODE), exclude=["__pycache__", "*.pyc"]),
            handler="handler.handler",
            timeout=ROTATION_TIMEOUT,
            environment={"REPLICATION_GROUP_ID": self.replication_group.ref},
            log_group=retained_log_group(self, "AuthTokenRotationLogs", config, key),
        )
        stack = Stack.of(self)
        rotation.add_to_role_policy(iam.PolicyStatement(
            actions=["elasticache:DescribeReplicationGroups", "elasticache:ModifyReplicationGroup"],
            resources=[stack.format_arn(service="elasticache", resource="replicationgroup",
                                        resource_name=self.replication_group.ref,
                                        arn_format=ArnFormat.COLON_RESOURCE_NAME)]))
        # What the four steps call on the secret (and, in prod, the data key through Secrets Manager).
        grant_secret(self.auth_secret, rotation, "DescribeSecret", "GetSecretValue", "PutSecretValue",
                     "UpdateSecretVersionStage", "ListSecretVersionIds")
        rotation.add_to_role_policy(iam.PolicyStatement(actions=["secretsmanager:GetRandomPassword"],
                                                        resources=["*"]))
        # Only Secrets Manager, rotating this secret, may invoke it.
        rotation.add_permission(
            "SecretsManagerRotates", principal=iam.ServicePrincipal("secretsmanager.amazonaws.com"),
            source_account=stack.account, source_arn=self.auth_secret.secret_arn)
        # The L1 schedule: the CDK's `add_rotation_schedule` grants a key of another stack (prod's data
        # key) in that stack's key policy, naming this function's role there: a cross-stack cycle.
        schedule = secretsmanager.CfnRotationSchedule(
            self, "AuthTokenRotationSchedule",
            secret_id=self.auth_secret.secret_arn,
            rotation_lambda_arn=rotation.function_arn,
            rotation_rules=secretsmanager.CfnRotationSchedule.RotationRulesProperty(
                schedule_expression=f"rate({AUTH_TOKEN_ROTATION.to_days()} days)"),
            # The first rotation one period after the first deploy, not during it.
            rotate_immediately_on_update=False)
        schedule.node.add_dependency(rotation.node.find_child("SecretsManagerRotates"))
        NagSuppressions.add_resource_suppressions(rotation, [
            NagPackSuppression(id="AwsSolutions-IAM4", applies_to=[
                "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
                reason="AWS's standard policy for writing the rotation function's own logs; nothing else."),
            NagPackSuppression(id="AwsSolutions-IAM5", applies_to=["Resource::*"],
                reason="secretsmanager:GetRandomPassword, which makes the new token, has no resource."),
            runtime_suppression(),  # the production Python, not the newest runtime (stacks/config.py)
        ], apply_to_children=True)
        return rotation
