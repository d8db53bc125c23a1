"""Secrets Manager rotation of the ElastiCache AUTH token (the four steps of a rotation function).

ElastiCache has no managed rotation for AUTH tokens, so this function does it with two APIs:
- createSecret: a new random token (ElastiCache's alphabet: letters and digits) as AWSPENDING;
- setSecret: ModifyReplicationGroup with the ROTATE strategy, which adds the new token beside the
  current one: the group accepts both, so every client still holding the previous token keeps
  working (until the next rotation replaces that one);
- testSecret: waits until the group has applied it (status `available`, no AUTH token change pending);
- finishSecret: the new token becomes AWSCURRENT (the previous one AWSPREVIOUS).

Each step is safe to run again (Secrets Manager retries a failed rotation): a token already created
or already set on the group is not made or set twice. Only boto3 (in the Lambda runtime) is used.
"""
from __future__ import annotations

import os
import time

PENDING, CURRENT = "AWSPENDING", "AWSCURRENT"
TOKEN_LENGTH = 64
# testSecret polls the group this often, and gives up (to be retried) this long before its timeout.
POLL_S = 15
TIMEOUT_MARGIN_MS = 30_000


class RotationError(Exception):
    """A step that cannot complete now; Secrets Manager retries the rotation."""


class AuthTokenRotation:
    def __init__(self, secrets, elasticache, replication_group_id: str):
        self._secrets = secrets
        self._elasticache = elasticache
        self._group_id = replication_group_id

    def run(self, event: dict, context=None) -> None:
        arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
        stages = self._secrets.describe_secret(SecretId=arn).get("VersionIdsToStages", {})
        if token not in stages:
            raise RotationError(f"version {token} is not a version of the secret")
        if CURRENT in stages[token]:
            return  # this rotation has finished already
        if PENDING not in stages[token]:
            raise RotationError(f"version {token} is not pending rotation")
        steps = {"createSecret": self.create, "setSecret": self.set, "testSecret": self.test,
                 "finishSecret": self.finish}
        if step not in steps:
            raise RotationError(f"unknown rotation step {step!r}")
        steps[step](arn, token, context)

    def create(self, arn: str, token: str, _context=None) -> None:
        try:
            self._secrets.get_secret_value(SecretId=arn, VersionId=token, VersionStage=PENDING)
            return  # made by an earlier try of this step
        except self._secrets.exceptions.ResourceNotFoundException:
            pass
        new_token = self._secrets.get_random_password(
            PasswordLength=TOKEN_LENGTH, ExcludePunctuation=True)["RandomPassword"]
        self._secrets.put_secret_value(SecretId=arn, ClientRequestToken=token, SecretString=new_token,
                                       VersionStages=[PENDING])

    def set(self, arn: str, token: str, _context=None) -> None:
        group = self._group()
        if group["Status"] != "available":
            raise RotationError(f"replication group {self._group_id} is {group['Status']}: try again later")
        if _already_set(group, self._created_at(arn, token)):
            return  # a ROTATE with the same token again would push the previous one out early
        pending = self._secrets.get_secret_value(SecretId=arn, VersionId=token, VersionStage=PENDING)
        self._elasticache.modify_replication_group(
            ReplicationGroupId=self._group_id, AuthToken=pending["SecretString"],
            AuthTokenUpdateStrategy="ROTATE", ApplyImmediately=True)

    def test(self, arn: str, token: str, context=None) -> None:
        while True:
            group = self._group()
            pending = group.get("PendingModifiedValues", {})
            applied = group["Status"] == "available" and not pending.get("AuthTokenStatus")
            dated = group.get("AuthTokenLastModifiedDate") is None or _already_set(group, self._created_at(arn, token))
            if applied and dated:
                return
            if context is not None and context.get_remaining_time_in_millis() < TIMEOUT_MARGIN_MS + POLL_S * 1000:
                raise RotationError(f"replication group {self._group_id} has not applied the new token yet")
            time.sleep(POLL_S)

    def finish(self, arn: str, token: str, _context=None) -> None:
        stages = self._secrets.describe_secret(SecretId=arn)["VersionIdsToStages"]
        current = next((version for version, names in stages.items() if CURRENT in names), None)
        if current == token:
            return
        self._secrets.update_secret_version_stage(SecretId=arn, VersionStage=CURRENT, MoveToVersionId=token,
                                                  RemoveFromVersionId=current)

    def _group(self) -> dict:
        return self._elasticache.describe_replication_groups(ReplicationGroupId=self._group_id)["ReplicationGroups"][0]

    def _created_at(self, arn: str, token: str):
        for page in self._secrets.get_paginator("list_secret_version_ids").paginate(SecretId=arn):
            for version in page["Versions"]:
                if version["VersionId"] == token:
                    return version["CreatedDate"]
        raise RotationError(f"version {token} not found")


def _already_set(group: dict, pending_created_at) -> bool:
    """The group's token changed after the pending version was made: this rotation set it."""
    modified = group.get("AuthTokenLastModifiedDate")
    return modified is not None and modified >= pending_created_at


def handler(event, context):
    import boto3

    AuthTokenRotation(boto3.client("secretsmanager"), boto3.client("elasticache"),
                      os.environ["REPLICATION_GROUP_ID"]).run(event, context)
