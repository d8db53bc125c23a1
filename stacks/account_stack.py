"""The account-wide settings cloud-ia needs, in one small stack per account and region: API Gateway's
CloudWatch role (`AWS::ApiGateway::Account`), which every stage's WebSocket access and execution
logs are written with.

API Gateway keeps one such setting per account and region. Were it in each stage's API stack, dev and
prod in one account would each own it, and each deploy or destroy of one would rewrite or remove the
role the other logs with. So it has a stage-free name (`cloudia-aws-account`): the first stage
deployed creates it, the next finds it unchanged, and it carries no stage tag (the app's `stage` tag
would flip on every deploy of the other stage). Its role and setting are retained: destroying one
stage's stacks never takes the logging of the other stage away.

A separate stack rather than a designated owner stage: a dev-only account has no prod stage to own
the setting, and nothing in it belongs to a stage.
"""
from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack, Tags
from aws_cdk import aws_apigateway as apigw_v1
from aws_cdk import aws_iam as iam
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

ACCOUNT_STACK_NAME = "cloudia-aws-account"
PUSH_TO_LOGS_POLICY = "service-role/AmazonAPIGatewayPushToCloudWatchLogs"


class AccountStack(Stack):
    """The same for every stage: it takes no configuration."""

    def __init__(self, scope: Construct, construct_id: str = ACCOUNT_STACK_NAME, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        role = iam.Role(
            self, "ApiGatewayCloudWatchRole",
            description="API Gateway writes the access and execution logs of every cloud-ia stage with it",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(PUSH_TO_LOGS_POLICY)],
        )
        role.apply_removal_policy(RemovalPolicy.RETAIN)
        NagSuppressions.add_resource_suppressions(role, [NagPackSuppression(
            id="AwsSolutions-IAM4", reason=(
                "AWS's policy for API Gateway's account-level logging role; it only writes logs."),
            applies_to=[f"Policy::arn:<AWS::Partition>:iam::aws:policy/{PUSH_TO_LOGS_POLICY}"])])
        self.settings = apigw_v1.CfnAccount(self, "ApiGatewayAccount", cloud_watch_role_arn=role.role_arn)
        self.settings.apply_removal_policy(RemovalPolicy.RETAIN)
        Tags.of(self).remove("stage")
