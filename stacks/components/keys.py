"""Customer-managed KMS keys: the data key of prod, and the alarm topic's key of every stage.

**The data key** (prod only) is one key in the state stack, passed down to the stacks that encrypt with
it: the tables and queues (state), the log groups (every stack) and the secrets (network, worker). One
key, not one per stack, because the state outlives the stateless stacks: a retained log group or table
must stay readable after the stack that wrote it is gone, and only the retained state stack guarantees
that; one key also costs 1 USD a month instead of five, and leaves one key policy to review. The stacks
that use it already depend on the state stack, so the cross-stack references add no new ordering.

FinOps, dev: no data key. Tables keep the AWS-managed key (`aws/dynamodb`), queues SQS-managed SSE,
log groups CloudWatch Logs' own encryption and secrets `aws/secretsmanager`: all free, and what a
stage without long-lived data needs. Each place that makes this choice says so where it makes it.

**The alarm topic's key** exists in both stages: CloudWatch alarms (and AWS Budgets) can publish to an
encrypted topic only if the key policy lets their service principal use the key, which the AWS-managed
`alias/aws/sns` key never does. It is a separate key, in the observability stack, so those two service
principals are never in the data key's policy.
"""
from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.config import AppConfig

# What SNS needs from a publisher's key to encrypt a message (docs: SNS key management).
TOPIC_PUBLISHER_KEY_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey*"]
# What CloudWatch Logs needs to encrypt and read a log group's events (docs: encrypt log data in CloudWatch Logs).
LOGS_KEY_ACTIONS = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
# A key scheduled for deletion can still be cancelled this long.
PENDING_WINDOW = Duration.days(30)


def data_key(scope: Construct, config: AppConfig) -> kms.Key | None:
    """The prod data key (None in dev: the FinOps choice above). Retained: deleting it would make every
    table backup, retained log group and old secret version unreadable."""
    if not config.is_prod:
        return None
    stack = Stack.of(scope)
    key = kms.Key(
        scope, "DataKey",
        description=f"cloud-ia {config.stage}: tables, queues, log groups and secrets",
        alias=f"alias/{config.stack_name('data')}",
        enable_key_rotation=True,
        pending_window=PENDING_WINDOW,
        removal_policy=RemovalPolicy.RETAIN,
    )
    # CloudWatch Logs encrypts with the key only for log groups of this account and region (the
    # encryption context it always sends); the groups' names are CloudFormation's, not known here.
    key.add_to_resource_policy(iam.PolicyStatement(
        sid="CloudWatchLogsOfThisAccount",
        principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
        actions=LOGS_KEY_ACTIONS,
        resources=["*"],
        conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": stack.format_arn(
            # arn:...:logs:REGION:ACCOUNT:log-group:NAME, as CloudWatch Logs writes it
            service="logs", resource="log-group", resource_name="*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME)}},
    ))
    return key


def topic_key(scope: Construct, config: AppConfig) -> kms.Key:
    """The alarm topic's key, in both stages; publishers add their statement (`allow_publisher`)."""
    return kms.Key(
        scope, "TopicKey",
        description=f"cloud-ia {config.stage}: the alarm topic",
        enable_key_rotation=True,
        pending_window=PENDING_WINDOW,
        # The topic holds no data at rest beyond messages in delivery: dev removes the key with it.
        removal_policy=RemovalPolicy.RETAIN if config.is_prod else RemovalPolicy.DESTROY,
    )


def allow_publisher(key: kms.IKey, *, sid: str, service: str, source_arn: str) -> None:
    """Let an AWS service publish to a topic encrypted with `key`, on behalf of this account's
    resources only (`aws:SourceAccount`, `aws:SourceArn`: no confused deputy)."""
    key.add_to_resource_policy(iam.PolicyStatement(
        sid=sid,
        principals=[iam.ServicePrincipal(service)],
        actions=TOPIC_PUBLISHER_KEY_ACTIONS,
        resources=["*"],
        conditions=source_conditions(Stack.of(key).account, source_arn),
    ))


def source_conditions(account: str, source_arn: str) -> dict:
    return {"StringEquals": {"aws:SourceAccount": account}, "ArnLike": {"aws:SourceArn": source_arn}}
