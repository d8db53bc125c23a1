"""Stand up the queue, DLQ, tables and user pool of a deployment in the emulator, from the same key
schemas the stacks use (`cloudia.schema`), for tests below the level of a full `cdklocal deploy`."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import boto3

from cloudia.schema import TABLES
from cloudia.settings import Resilience, Settings
from local_runtime.identity import LocalUserPool, ensure_user_pool


@dataclass(frozen=True)
class Resources:
    settings: Settings
    dlq_url: str
    user_pool: LocalUserPool


def create_resources(resilience: Resilience = Resilience(), **overrides) -> Resources:
    suffix = uuid.uuid4().hex[:8]
    sqs = boto3.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"jobs-dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=f"jobs-{suffix}",
        Attributes={
            "VisibilityTimeout": "60",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": resilience.max_receives}),
        },
    )["QueueUrl"]
    db = boto3.client("dynamodb")
    names = {}
    for logical, (pk, sk, _ttl) in TABLES.items():
        name = f"{logical}-{suffix}"
        keys = [{"AttributeName": pk, "KeyType": "HASH"}]
        attrs = [{"AttributeName": pk, "AttributeType": "S"}]
        if sk:
            keys.append({"AttributeName": sk, "KeyType": "RANGE"})
            attrs.append({"AttributeName": sk, "AttributeType": "S"})
        db.create_table(TableName=name, KeySchema=keys, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST")
        names[logical] = name
    # One pool per emulator, as `make up` makes it (its users outlive a test; their ids are unique).
    pool = ensure_user_pool(sqs.meta.endpoint_url)
    settings = Settings(
        user_pool_id=pool.pool_id,
        user_pool_client_id=pool.client_id,
        cognito_jwks_url=pool.jwks_url,
        jobs_queue_url=queue_url,
        jobs_dlq_url=dlq_url,
        history_table=names["history"],
        jobs_table=names["jobs"],
        resilience=resilience,
        **overrides,
    )
    return Resources(settings, dlq_url, pool)
