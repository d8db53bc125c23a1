"""Log groups with the configured retention: logs that are never deleted are a cost that only grows."""
from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import AppConfig

# CloudWatch accepts only these retention periods (days), in the order of `logs.RetentionDays`.
_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                   2922, 3288, 3653]


def retention(days: int) -> logs.RetentionDays:
    """The shortest allowed retention that keeps logs at least `days`."""
    members = [m for m in logs.RetentionDays if m.name != "INFINITE"]
    index = next((i for i, d in enumerate(_RETENTION_DAYS) if d >= days), len(_RETENTION_DAYS) - 1)
    return members[index]


def retained_log_group(scope: Construct, construct_id: str, config: AppConfig,
                       key: kms.IKey | None) -> logs.LogGroup:
    """`key`: the prod data key (keys.py), whose policy lets CloudWatch Logs use it. FinOps, dev (None):
    CloudWatch Logs' own encryption, free."""
    return logs.LogGroup(
        scope, construct_id,
        retention=retention(config.log_retention_days),
        encryption_key=key,
        removal_policy=RemovalPolicy.RETAIN if config.is_prod else RemovalPolicy.DESTROY,
    )
