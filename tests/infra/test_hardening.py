"""Hardened templates (issue 12): customer-managed keys in prod, the alarm topic encrypted in both
stages, grants limited to the calls the code makes, one owner of the account-wide API Gateway
setting, and the Redis AUTH token rotated."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.infra.conftest import ROOT

DATA_KEY = "DataKey17AFBB84"


def resources(synth, kind: str) -> dict:
    """Every resource of `kind` in every stack, by "stack/logical id"."""
    return {f"{name}/{lid}": r for name, t in synth.templates.items() for lid, r in t.find_resources(kind).items()}


def is_data_key(value) -> bool:
    """The state stack's data key: by GetAtt there, by its export elsewhere."""
    return DATA_KEY in json.dumps(value)


def statements(synth, stack: str, role_prefix: str) -> list[dict]:
    """The statements of the default policies of the roles whose logical id starts with `role_prefix`."""
    found = []
    for policy in synth.templates[stack].find_resources("AWS::IAM::Policy").values():
        if any(r["Ref"].startswith(role_prefix) for r in policy["Properties"]["Roles"]):
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def actions(found: list[dict], prefix: str = "") -> set[str]:
    out = set()
    for statement in found:
        listed = statement["Action"]
        out.update(a for a in ([listed] if isinstance(listed, str) else listed) if a.startswith(prefix))
    return out


def all_statements(synth) -> list[dict]:
    return [s for p in resources(synth, "AWS::IAM::Policy").values()
            for s in p["Properties"]["PolicyDocument"]["Statement"]]


# --- prod: one customer-managed key, in the state stack, for tables, queues, log groups and secrets ---

def test_prod_has_one_rotated_retained_data_key_in_the_state_stack(aws_prod_synth):
    keys = resources(aws_prod_synth, "AWS::KMS::Key")
    data_keys = {k: v for k, v in keys.items() if k.startswith("state/")}
    assert list(data_keys) == [f"state/{DATA_KEY}"]
    key = data_keys[f"state/{DATA_KEY}"]
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == key["UpdateReplacePolicy"] == "Retain"
    aws_prod_synth.templates["state"].has_resource_properties("AWS::KMS::Alias", {
        "AliasName": "alias/cloudia-aws-prod-data"})


def test_prod_tables_and_queues_use_the_data_key(aws_prod_synth):
    state = aws_prod_synth.templates["state"]
    for table in state.find_resources("AWS::DynamoDB::Table").values():
        sse = table["Properties"]["SSESpecification"]
        assert sse["SSEEnabled"] is True and sse["SSEType"] == "KMS" and is_data_key(sse["KMSMasterKeyId"])
    queues = state.find_resources("AWS::SQS::Queue")
    assert len(queues) == 2
    for queue in queues.values():
        assert is_data_key(queue["Properties"]["KmsMasterKeyId"])
        assert "SqsManagedSseEnabled" not in queue["Properties"]


def test_prod_log_groups_of_every_stack_use_the_data_key(aws_prod_synth):
    groups = resources(aws_prod_synth, "AWS::Logs::LogGroup")
    stacks = {k.split("/")[0] for k in groups}
    assert {"network", "api", "worker", "web"} <= stacks
    for name, group in groups.items():
        assert is_data_key(group["Properties"].get("KmsKeyId")), name


def test_prod_secrets_use_the_data_key(aws_prod_synth):
    secrets = resources(aws_prod_synth, "AWS::SecretsManager::Secret")
    assert {k.split("/")[0] for k in secrets} == {"network", "worker"}
    for name, secret in secrets.items():
        assert is_data_key(secret["Properties"].get("KmsKeyId")), name


def test_the_data_key_lets_cloudwatch_logs_use_it_only_for_log_groups_of_this_account(aws_prod_synth):
    [key] = aws_prod_synth.templates["state"].find_resources("AWS::KMS::Key").values()
    [logs] = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
              if s.get("Principal", {}).get("Service") == "logs.us-east-1.amazonaws.com"]
    context = logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert json.dumps(context).endswith(':log-group:*"]]}') and "AWS::AccountId" in json.dumps(context)
    # No other service principal reads the data key (the alarm topic has its own key).
    services = {s["Principal"]["Service"] for s in key["Properties"]["KeyPolicy"]["Statement"]
                if "Service" in s.get("Principal", {})}
    assert services == {"logs.us-east-1.amazonaws.com"}


def test_prod_key_grants_are_on_the_grantee_and_only_through_the_service(aws_prod_synth):
    kms_statements = [s for s in all_statements(aws_prod_synth) if actions([s], "kms:")]
    assert kms_statements
    for statement in kms_statements:
        assert is_data_key(statement["Resource"]), statement
        via = statement["Condition"]["StringEquals"]["kms:ViaService"]
        assert via in {"dynamodb.us-east-1.amazonaws.com", "sqs.us-east-1.amazonaws.com",
                       "secretsmanager.us-east-1.amazonaws.com"}, statement
        assert not [a for a in actions([statement]) if "*" in a], statement


def via(found: list[dict], service: str) -> set[str]:
    return actions([s for s in found if s.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
                    == f"{service}.us-east-1.amazonaws.com"], "kms:")


def test_prod_queue_producers_may_make_data_keys_and_readers_only_decrypt(aws_prod_synth):
    send_message = statements(aws_prod_synth, "api", "FunctionsSendMessage")
    assert via(send_message, "sqs") == {"kms:Decrypt", "kms:GenerateDataKey"}
    worker = statements(aws_prod_synth, "worker", "WorkerTaskTaskRole")
    assert via(worker, "sqs") == {"kms:Decrypt", "kms:GenerateDataKey"}  # requeues and dead-letters
    default = statements(aws_prod_synth, "api", "FunctionsDefault")
    assert via(default, "dynamodb") == {"kms:Decrypt"}  # it only queries the history
    assert via(default, "secretsmanager") == {"kms:Decrypt"}
    assert via(send_message, "dynamodb") == {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"}


def test_prod_templates_pass_cfn_lint(aws_prod_synth):
    templates = sorted(str(p) for p in aws_prod_synth.out_dir.glob("*.template.json"))
    assert len(templates) == len(aws_prod_synth.stacks)
    result = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), "--ignore-checks", "W3005", "--",
                             *templates], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- dev: the FinOps choice, AWS- or service-managed encryption, no data key ---

def test_dev_keeps_service_managed_encryption_and_no_data_key(aws_synth):
    assert not aws_synth.templates["state"].find_resources("AWS::KMS::Key")
    for table in aws_synth.templates["state"].find_resources("AWS::DynamoDB::Table").values():
        assert table["Properties"]["SSESpecification"] == {"SSEEnabled": True}  # aws/dynamodb
    for queue in aws_synth.templates["state"].find_resources("AWS::SQS::Queue").values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True and "KmsMasterKeyId" not in queue["Properties"]
    for name, group in resources(aws_synth, "AWS::Logs::LogGroup").items():
        assert "KmsKeyId" not in group["Properties"], name
    for name, secret in resources(aws_synth, "AWS::SecretsManager::Secret").items():
        assert "KmsKeyId" not in secret["Properties"], name  # aws/secretsmanager
    assert not actions(all_statements(aws_synth), "kms:")


def test_the_local_target_creates_no_key(local_synth):
    assert not resources(local_synth, "AWS::KMS::Key")


# --- the alarm topic: encrypted in both stages, publishers limited to this account ---

def topic_key_policy(synth) -> list[dict]:
    [key] = synth.templates["observability"].find_resources("AWS::KMS::Key").values()
    assert key["Properties"]["EnableKeyRotation"] is True
    return key["Properties"]["KeyPolicy"]["Statement"]


def test_alarm_topic_is_encrypted_with_its_own_customer_managed_key(any_aws_synth):
    template = any_aws_synth.templates["observability"]
    [topic] = template.find_resources("AWS::SNS::Topic").values()
    [key_id] = template.find_resources("AWS::KMS::Key")
    # Its own key, not alias/aws/sns (whose policy lets no alarm publish) nor the data key.
    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}


def test_only_this_accounts_alarms_and_budgets_may_use_the_topic_key(any_aws_synth):
    services = {}
    for statement in topic_key_policy(any_aws_synth):
        if "Service" in statement.get("Principal", {}):
            services[statement["Principal"]["Service"]] = statement
    assert set(services) == {"cloudwatch.amazonaws.com", "budgets.amazonaws.com"}
    for service, statement in services.items():
        assert set(statement["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
        assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert ":alarm:*" in json.dumps(services["cloudwatch.amazonaws.com"]["Condition"]["ArnLike"]["aws:SourceArn"])
    assert "arn:aws:budgets::" in json.dumps(services["budgets.amazonaws.com"]["Condition"]["ArnLike"])


def test_budgets_may_publish_only_for_this_accounts_budgets(any_aws_synth):
    [policy] = any_aws_synth.templates["observability"].find_resources("AWS::SNS::TopicPolicy").values()
    found = policy["Properties"]["PolicyDocument"]["Statement"]
    [budgets] = [s for s in found if s["Principal"] != "*" and s["Principal"].get("Service") == "budgets.amazonaws.com"]
    assert budgets["Action"] == "sns:Publish"
    assert budgets["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert budgets["Condition"]["ArnLike"]["aws:SourceArn"] == {
        "Fn::Join": ["", ["arn:aws:budgets::", {"Ref": "AWS::AccountId"}, ":*"]]}
    # Every service allowed to publish is held to this account.
    for statement in found:
        if statement["Effect"] == "Allow":
            assert "aws:SourceAccount" in statement["Condition"]["StringEquals"], statement


# --- grants: exactly the calls the code makes ---

FUNCTION_DATA_ACTIONS = {
    "Authorizer": set(),
    "Connect": set(),
    "Disconnect": set(),
    # (the history's Query: a message's cost with a cold context cache, and a retry's text)
    "SendMessage": {"sqs:SendMessage", "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem", "dynamodb:Query"},
    "Default": {"dynamodb:Query"},
}
WORKER_DATA_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage",
                       "dynamodb:PutItem", "dynamodb:Query", "dynamodb:GetItem", "dynamodb:UpdateItem"}


@pytest.mark.parametrize("function", sorted(FUNCTION_DATA_ACTIONS))
def test_each_function_may_call_exactly_what_its_code_calls(any_synth, function):
    found = statements(any_synth, "api", f"Functions{function}")
    assert actions(found, "dynamodb:") | actions(found, "sqs:") == FUNCTION_DATA_ACTIONS[function]


def test_the_default_function_only_queries_the_history(any_synth):
    found = [s for s in statements(any_synth, "api", "FunctionsDefault") if actions([s], "dynamodb:")]
    assert [actions([s]) for s in found] == [{"dynamodb:Query"}]
    assert "HistoryTable" in json.dumps(found[0]["Resource"])


def test_send_message_writes_each_table_with_its_own_calls(any_synth):
    by_table = {}
    for statement in statements(any_synth, "api", "FunctionsSendMessage"):
        for table in ("History", "Jobs"):
            if f"Tables{table}Table" in json.dumps(statement["Resource"]):
                by_table[table] = actions([statement], "dynamodb:")
    assert by_table == {
        "Jobs": {"dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:UpdateItem"},
        "History": {"dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query"},
    }


def test_the_worker_may_call_exactly_what_its_code_calls(any_aws_synth):
    found = statements(any_aws_synth, "worker", "WorkerTaskTaskRole")
    assert actions(found, "dynamodb:") | actions(found, "sqs:") == WORKER_DATA_ACTIONS
    # The jobs table is read and updated, never written whole; the history written and queried.
    for statement in found:
        if "TablesJobsTable" in json.dumps(statement["Resource"]):
            assert actions([statement]) == {"dynamodb:GetItem", "dynamodb:UpdateItem"}


def test_no_grant_anywhere_scans_or_batches(any_aws_synth):
    granted = actions(all_statements(any_aws_synth))
    assert not {a for a in granted if re.match(r"dynamodb:(Scan|Batch|GetRecords|GetShardIterator|DescribeTable)", a)}
    assert not {a for a in granted if a in ("sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:PurgeQueue")}


def test_the_worker_may_post_to_connections_of_its_stage_and_nothing_else(any_aws_synth):
    found = [s for s in statements(any_aws_synth, "worker", "WorkerTask") if actions([s], "execute-api:")]
    [statement] = found
    assert statement["Action"] == "execute-api:ManageConnections"
    stage = any_aws_synth.stage
    assert statement["Resource"]["Fn::Join"][1][-1] == f"/{stage}/POST/@connections/*"


MANAGEMENT_CALLS = re.compile(r"\b(delete_connection|get_connection|post_to_connection)\(")


def test_the_code_only_posts_to_connections_so_post_is_all_the_grant_needs():
    # If the worker ever deletes or reads connections through the Management API, the grant above
    # (POST only) must grow with it. No code calls it through boto3; the pushes' own client
    # (cloudia/push.py, ConnectionsApi) sends POSTs and nothing else.
    calls = set()
    for path in [*(ROOT / "cloudia").rglob("*.py"), *(ROOT / "worker_image").rglob("*.py"),
                 *(ROOT / "functions").glob("*.py")]:
        calls |= set(MANAGEMENT_CALLS.findall(path.read_text()))
    assert calls == set()
    methods = re.findall(r"_session_now\(\)\.(\w+)\(", (ROOT / "cloudia" / "push.py").read_text())
    assert methods == ["post"]


# --- the account-wide API Gateway setting: one owner for every stage ---

def test_api_gateway_account_setting_lives_only_in_the_account_stack(any_aws_synth):
    owners = resources(any_aws_synth, "AWS::ApiGateway::Account")
    assert list(owners) == ["account/ApiGatewayAccount"]
    assert any_aws_synth.stacks["account"].stack_name == "cloudia-aws-account"
    [account] = owners.values()
    assert account["DeletionPolicy"] == "Retain"
    [role] = any_aws_synth.templates["account"].find_resources("AWS::IAM::Role").values()
    assert role["DeletionPolicy"] == "Retain"
    assert "AWS::ApiGateway::Account" not in json.dumps(any_aws_synth.templates["api"].to_json())


def test_both_stages_deploy_the_very_same_account_stack(aws_synth, aws_prod_synth):
    # Two stages in one account: the second deploy finds the stack as the first left it.
    assert aws_synth.templates["account"].to_json() == aws_prod_synth.templates["account"].to_json()
    # and carries no stage tag, which would flip with each stage's deploy
    tagged = [r for r in aws_synth.templates["account"].to_json()["Resources"].values() if "Tags" in r["Properties"]]
    assert tagged and all({t["Key"] for t in r["Properties"]["Tags"]} == {"project"} for r in tagged)


def test_the_api_stack_is_deployed_after_the_account_setting(any_aws_synth):
    assert any_aws_synth.stacks["account"] in any_aws_synth.stacks["api"].dependencies


def test_the_local_target_has_no_account_stack(local_synth):
    assert "account" not in local_synth.stacks


# --- no long-lived secret without rotation ---

def test_the_redis_auth_token_is_rotated_every_30_days(any_aws_synth):
    network = any_aws_synth.templates["network"]
    [schedule] = network.find_resources("AWS::SecretsManager::RotationSchedule").values()
    props = schedule["Properties"]
    assert props["SecretId"] == {"Ref": next(iter(network.find_resources("AWS::SecretsManager::Secret")))}
    assert props["RotationRules"] == {"ScheduleExpression": "rate(30 days)"}
    assert props["RotateImmediatelyOnUpdate"] is False
    functions = network.find_resources("AWS::Lambda::Function")
    [rotation_id] = [k for k, f in functions.items() if f["Properties"]["Handler"] == "handler.handler"]
    assert props["RotationLambdaARN"] == {"Fn::GetAtt": [rotation_id, "Arn"]}


def test_only_secrets_manager_rotating_this_secret_may_invoke_the_rotation(any_aws_synth):
    network = any_aws_synth.templates["network"]
    [permission] = network.find_resources("AWS::Lambda::Permission").values()
    [secret_id] = network.find_resources("AWS::SecretsManager::Secret")
    assert permission["Properties"]["Principal"] == "secretsmanager.amazonaws.com"
    assert permission["Properties"]["SourceArn"] == {"Ref": secret_id}
    assert permission["Properties"]["SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_the_rotation_may_modify_only_this_replication_group(any_aws_synth):
    found = statements(any_aws_synth, "network", "RedisAuthTokenRotation")
    [elasticache] = [s for s in found if actions([s], "elasticache:")]
    assert set(elasticache["Action"]) == {"elasticache:DescribeReplicationGroups", "elasticache:ModifyReplicationGroup"}
    assert "RedisReplicationGroup" in json.dumps(elasticache["Resource"])
    assert actions(found, "secretsmanager:") == {
        "secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage", "secretsmanager:ListSecretVersionIds",
        "secretsmanager:GetRandomPassword"}


def test_every_secret_without_rotation_is_a_provider_key_that_says_why(any_aws_synth):
    rotated = {json.dumps(s["Properties"]["SecretId"])
               for s in resources(any_aws_synth, "AWS::SecretsManager::RotationSchedule").values()}
    for name, secret in resources(any_aws_synth, "AWS::SecretsManager::Secret").items():
        lid = name.split("/")[1]
        if json.dumps({"Ref": lid}) in rotated:
            continue
        assert lid.startswith("WorkerLlm"), name
        reasons = [r for r in secret["Metadata"]["cdk_nag"]["rules_to_suppress"] if r["id"] == "AwsSolutions-SMG4"]
        assert reasons and "LLM provider" in reasons[0]["reason"], name


# --- the rotation function's four steps (fake clients: moto has no ElastiCache AUTH tokens) ---

class NotFound(Exception):
    pass


class FakeSecrets:
    class exceptions:
        ResourceNotFoundException = NotFound

    def __init__(self):
        now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        # As Secrets Manager starts a rotation: the new version is labelled AWSPENDING, without a value.
        self.values = {"v1": "old-token"}
        self.stages = {"v1": ["AWSCURRENT"], "v2": ["AWSPENDING"]}
        self.created = {"v1": now - timedelta(days=30), "v2": now}
        self.now = now

    def describe_secret(self, SecretId):
        return {"VersionIdsToStages": {v: list(s) for v, s in self.stages.items()}}

    def get_secret_value(self, SecretId, VersionId, VersionStage):
        if VersionId not in self.values or VersionStage not in self.stages.get(VersionId, []):
            raise NotFound(VersionId)
        return {"SecretString": self.values[VersionId]}

    def get_random_password(self, PasswordLength, ExcludePunctuation):
        assert ExcludePunctuation and 16 <= PasswordLength <= 128  # ElastiCache's AUTH token rules
        return {"RandomPassword": "n" * PasswordLength}

    def put_secret_value(self, SecretId, ClientRequestToken, SecretString, VersionStages):
        self.values[ClientRequestToken] = SecretString
        self.stages[ClientRequestToken] = list(VersionStages)
        self.created[ClientRequestToken] = self.now

    def update_secret_version_stage(self, SecretId, VersionStage, MoveToVersionId, RemoveFromVersionId):
        self.stages[RemoveFromVersionId] = ["AWSPREVIOUS"]
        self.stages[MoveToVersionId] = [VersionStage]

    def get_paginator(self, name):
        assert name == "list_secret_version_ids"
        created = self.created

        class Pages:
            def paginate(self, SecretId):
                return [{"Versions": [{"VersionId": v, "CreatedDate": c} for v, c in created.items()]}]
        return Pages()


class FakeElastiCache:
    def __init__(self, secrets: FakeSecrets):
        self.secrets = secrets
        self.status = "available"
        self.modified_at = secrets.now - timedelta(days=30)
        self.modifications = []

    def describe_replication_groups(self, ReplicationGroupId):
        return {"ReplicationGroups": [{"Status": self.status, "AuthTokenLastModifiedDate": self.modified_at,
                                       "PendingModifiedValues": {}}]}

    def modify_replication_group(self, **kwargs):
        self.modifications.append(kwargs)
        self.status = "modifying"


def rotation():
    from stacks.components.redis_rotation.handler import AuthTokenRotation

    secrets = FakeSecrets()
    elasticache = FakeElastiCache(secrets)
    return AuthTokenRotation(secrets, elasticache, "group-1"), secrets, elasticache


def event(step: str) -> dict:
    return {"SecretId": "arn:secret", "ClientRequestToken": "v2", "Step": step}


def test_a_rotation_adds_the_new_token_beside_the_old_and_makes_it_current():
    job, secrets, elasticache = rotation()
    job.run(event("createSecret"))
    job.run(event("createSecret"))  # a retry makes no second token
    assert secrets.stages["v2"] == ["AWSPENDING"] and secrets.values["v2"] == "n" * 64
    job.run(event("setSecret"))
    assert elasticache.modifications == [{"ReplicationGroupId": "group-1", "AuthToken": "n" * 64,
                                          "AuthTokenUpdateStrategy": "ROTATE", "ApplyImmediately": True}]
    elasticache.status, elasticache.modified_at = "available", secrets.now + timedelta(minutes=3)
    job.run(event("setSecret"))  # a retry after it applied: no second ROTATE (it would drop the old token)
    assert len(elasticache.modifications) == 1
    job.run(event("testSecret"))
    job.run(event("finishSecret"))
    assert secrets.stages == {"v1": ["AWSPREVIOUS"], "v2": ["AWSCURRENT"]}
    job.run(event("finishSecret"))  # finished: nothing more to do


def test_a_rotation_waits_while_the_group_is_busy():
    from stacks.components.redis_rotation.handler import RotationError

    job, secrets, elasticache = rotation()
    job.run(event("createSecret"))
    elasticache.status = "modifying"
    with pytest.raises(RotationError):
        job.run(event("setSecret"))
    assert elasticache.modifications == []

    class AlmostOut:
        def get_remaining_time_in_millis(self):
            return 1_000
    with pytest.raises(RotationError):
        job.run(event("testSecret"), AlmostOut())


def test_a_rotation_refuses_a_version_that_is_not_pending():
    from stacks.components.redis_rotation.handler import RotationError

    job, secrets, _ = rotation()
    with pytest.raises(RotationError):
        job.run({**event("createSecret"), "ClientRequestToken": "v3"})  # not a version of the secret
    secrets.stages["v2"] = ["AWSPREVIOUS"]
    with pytest.raises(RotationError):
        job.run(event("setSecret"))  # no longer pending
