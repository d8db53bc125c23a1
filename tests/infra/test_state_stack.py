"""Resilience and security properties of the stateful stack, in both targets."""
from stacks.config import AppConfig
from tests.infra.test_config import cdk_json_context

SECONDS_PER_DAY = 86400


def queues(synth):
    template = synth.templates["state"]
    found = template.find_resources("AWS::SQS::Queue")
    jobs = next(v for k, v in found.items() if k.startswith("JobsQueue"))
    dlq = next(v for k, v in found.items() if k.startswith("JobsDeadLetterQueue"))
    return jobs["Properties"], dlq["Properties"]


def test_jobs_queue_redrives_to_dlq_after_5_receives(any_synth):
    jobs, _ = queues(any_synth)
    assert jobs["RedrivePolicy"]["maxReceiveCount"] == 5
    assert jobs["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["JobsDeadLetterQueue8CC426EE", "Arn"]}


def test_dlq_keeps_messages_14_days(any_synth):
    _, dlq = queues(any_synth)
    assert dlq["MessageRetentionPeriod"] == 14 * SECONDS_PER_DAY


def test_dlq_accepts_only_the_jobs_queue(any_synth):
    _, dlq = queues(any_synth)
    policy = dlq["RedriveAllowPolicy"]
    assert policy["redrivePermission"] == "byQueue"
    assert len(policy["sourceQueueArns"]) == 1
    assert "-jobs" in str(policy["sourceQueueArns"][0])


def test_queues_are_encrypted(any_synth):
    for props in queues(any_synth):
        assert props["SqsManagedSseEnabled"] is True


def test_queues_enforce_ssl(any_synth):
    policies = any_synth.templates["state"].find_resources("AWS::SQS::QueuePolicy")
    assert len(policies) == 2
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                   for s in statements)


def test_jobs_queue_visibility_timeout_is_a_liveness_window_past_the_first_heartbeat(any_synth):
    jobs, _ = queues(any_synth)
    config = AppConfig.from_context(cdk_json_context())
    assert jobs["VisibilityTimeout"] == config.jobs_visibility_timeout_s
    # the worker's heartbeat extends it while it holds the job; a dead worker's job is back within it
    r = config.resilience
    assert jobs["VisibilityTimeout"] >= r.job_liveness_s + r.job_heartbeat_s


def tables(synth):
    return {k: v for k, v in synth.templates["state"].find_resources("AWS::DynamoDB::Table").items()}


def test_two_tables_history_and_jobs(any_synth):
    names = sorted(k.removeprefix("Tables").split("Table")[0] for k in tables(any_synth))
    assert names == ["History", "Jobs"]


def test_tables_expire_items_by_ttl(any_synth):
    ttl = {k: v["Properties"]["TimeToLiveSpecification"] for k, v in tables(any_synth).items()}
    for logical, spec in ttl.items():
        assert spec["Enabled"] is True
        assert spec["AttributeName"] == "expiresAt"


def test_tables_have_point_in_time_recovery_and_encryption(any_synth):
    for table in tables(any_synth).values():
        props = table["Properties"]
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["BillingMode"] == "PAY_PER_REQUEST"


def test_dev_state_is_destroyed_with_the_stack(aws_synth):
    for resource in [*tables(aws_synth).values()]:
        assert resource["DeletionPolicy"] == "Delete"


def test_prod_state_is_retained(aws_prod_synth):
    template = aws_prod_synth.templates["state"]
    for kind in ("AWS::DynamoDB::Table", "AWS::SQS::Queue"):
        for resource in template.find_resources(kind).values():
            assert resource["DeletionPolicy"] == "Retain"
            assert resource["UpdateReplacePolicy"] == "Retain"


# A logical ID that changes makes CloudFormation replace the resource: a new, empty table or queue.
STATEFUL_LOGICAL_IDS = {
    "AWS::SQS::Queue": ["JobsDeadLetterQueue8CC426EE", "JobsQueue24944186"],
    "AWS::DynamoDB::Table": ["TablesHistoryTableA0C18509", "TablesJobsTable5ECCB73A"],
}


def test_stateful_logical_ids_are_stable(any_synth):
    template = any_synth.templates["state"]
    for kind, expected in STATEFUL_LOGICAL_IDS.items():
        assert sorted(template.find_resources(kind)) == expected
