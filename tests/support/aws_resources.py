"""Stand up the queue, DLQ and tables of a deployment in the emulator, from the same key schemas the
stacks use (`cloudia.schema`), for tests below the level of a full `cdklocal deploy`."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import boto3

from cloudia.schema import TABLES
from cloudia.settings import Resilience, Settings


@dataclass(frozen=True)
class Resources:
    settings: Settings
    dlq_url: str


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
    settings = Settings(
        jobs_queue_url=queue_url,
        jobs_dlq_url=dlq_url,
        history_table=names["history"],
        jobs_table=names["jobs"],
        idempotency_table=names["idempotency"],
        resilience=resilience,
        **overrides,
    )
    return Resources(settings, dlq_url)
