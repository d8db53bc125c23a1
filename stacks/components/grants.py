"""Exact grants: the DynamoDB, SQS and Secrets Manager actions a piece of code calls, and the key actions
those calls need.

The CDK's purpose grants give more than this system uses (`grant_read_data` includes `Scan`,
`BatchGetItem` and the stream reads; `grant_send_messages` includes `GetQueueAttributes`), so each
grantee here is given the actions its code calls and no other. Each list names the calls it stands
for; a new call in the code needs its action here (the template tests list them per grantee).
"""
from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs

_DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}
# What DynamoDB needs of a caller's rights on a customer-managed table key: decrypting to read,
# encrypting too to write (the CDK's own split, without the wildcards cdk-nag rejects).
_KEY_READ = ["kms:Decrypt"]
_KEY_WRITE = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
# SQS: a producer needs a data key and to decrypt it; a consumer to decrypt (docs: SQS key management).
_QUEUE_KEY_SEND = ["kms:Decrypt", "kms:GenerateDataKey"]
_QUEUE_KEY_RECEIVE = ["kms:Decrypt"]


def grant_table(table: dynamodb.Table, grantee: iam.IGrantable, *actions: str) -> None:
    """`actions` without their `dynamodb:` prefix (GetItem, Query, ...)."""
    table.grant(grantee, *(f"dynamodb:{a}" for a in actions))
    if table.encryption_key is not None:
        writes = _DYNAMODB_WRITES & set(actions)
        _grant_key_via(table.encryption_key, grantee, "dynamodb", _KEY_WRITE if writes else _KEY_READ)


def grant_queue(queue: sqs.Queue, grantee: iam.IGrantable, *actions: str) -> None:
    """`actions` without their `sqs:` prefix (SendMessage, ReceiveMessage, ...)."""
    queue.grant(grantee, *(f"sqs:{a}" for a in actions))
    if queue.encryption_master_key is not None:
        sends = "SendMessage" in actions
        _grant_key_via(queue.encryption_master_key, grantee, "sqs", _QUEUE_KEY_SEND if sends else _QUEUE_KEY_RECEIVE)


def grant_secret(secret: secretsmanager.ISecret, grantee: iam.IGrantable, *actions: str) -> None:
    """`actions` without their `secretsmanager:` prefix (GetSecretValue, ...); with a customer-managed
    key, `kms:Decrypt` (and `kms:GenerateDataKey` to write a version) through Secrets Manager only.

    Not `secret.grant_read`: with a key of another stack (the state stack's data key) it names the
    grantee's role in that stack's key policy (see `_grant_key_via`)."""
    iam.Grant.add_to_principal(grantee=grantee, actions=[f"secretsmanager:{a}" for a in actions],
                               resource_arns=[secret.secret_arn])
    if secret.encryption_key is not None:
        writes = "PutSecretValue" in actions
        _grant_key_via(secret.encryption_key, grantee, "secretsmanager",
                       ["kms:Decrypt", *(["kms:GenerateDataKey"] if writes else [])])


def grant_secret_read(secret: secretsmanager.ISecret, grantee: iam.IGrantable) -> None:
    """What `aws.secret_value` calls (GetSecretValue), and DescribeSecret as the CDK's read grant has."""
    grant_secret(secret, grantee, "GetSecretValue", "DescribeSecret")


def _grant_key_via(key: kms.IKey, grantee: iam.IGrantable, service: str, actions: list[str]) -> None:
    """The key actions on the grantee's own policy, usable only through `service` (`kms:ViaService`):
    the grantee cannot call KMS with the key directly. On the principal, not in the key's policy: the
    key is in the state stack, and naming a role of another stack there would make the stacks
    reference each other."""
    iam.Grant.add_to_principal(
        grantee=grantee, actions=actions, resource_arns=[key.key_arn],
        conditions={"StringEquals": {"kms:ViaService": f"{service}.{Stack.of(key).region}.amazonaws.com"}})
