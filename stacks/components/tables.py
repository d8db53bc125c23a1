"""The DynamoDB tables: conversation history and jobs (Powertools' idempotency records are in Redis).

`Table` rather than `TableV2`: TableV2 synthesizes AWS::DynamoDB::GlobalTable, which the emulators
cannot create, and one region is all this system needs."""
from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from cloudia.schema import TABLES


class ChatTables(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy,
                 point_in_time_recovery: bool = True, key: kms.IKey | None = None) -> None:
        super().__init__(scope, construct_id)
        # prod: the data key (keys.py). FinOps, dev: the AWS-managed key (aws/dynamodb), no key to pay for.
        encryption = dict(encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED, encryption_key=key) if key \
            else dict(encryption=dynamodb.TableEncryption.AWS_MANAGED)
        self.tables: dict[str, dynamodb.Table] = {}
        for logical, (partition_key, sort_key, ttl_attribute) in TABLES.items():
            self.tables[logical] = dynamodb.Table(
                self, f"{logical.capitalize()}Table",
                partition_key=dynamodb.Attribute(name=partition_key, type=dynamodb.AttributeType.STRING),
                sort_key=dynamodb.Attribute(name=sort_key, type=dynamodb.AttributeType.STRING) if sort_key else None,
                # On-demand: a chat's load is spiky, and an idle table costs nothing.
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                # Old items expire by themselves (history, finished jobs).
                time_to_live_attribute=ttl_attribute,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=point_in_time_recovery),
                **encryption,
                removal_policy=removal_policy,
            )

    @property
    def history(self) -> dynamodb.Table:
        return self.tables["history"]

    @property
    def jobs(self) -> dynamodb.Table:
        return self.tables["jobs"]
