"""A real deployment: the `local` target bootstrapped and deployed with cdklocal to moto's server.

moto skips resource types it lacks and still reports success, so these tests look for each resource
the system needs, not at the stack status.
"""
import json


def test_jobs_queue_exists_and_redrives_to_the_dlq_after_5_receives(local_deployment):
    sqs = local_deployment.client("sqs")
    env = local_deployment.environment
    attributes = sqs.get_queue_attributes(QueueUrl=env["JOBS_QUEUE_URL"], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["maxReceiveCount"] == 5
    dlq_arn = sqs.get_queue_attributes(QueueUrl=env["JOBS_DLQ_URL"],
                                       AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert redrive["deadLetterTargetArn"] == dlq_arn


def test_dlq_exists_with_14_days_retention(local_deployment):
    sqs = local_deployment.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=local_deployment.environment["JOBS_DLQ_URL"],
                                          AttributeNames=["MessageRetentionPeriod"])["Attributes"]
    assert attributes["MessageRetentionPeriod"] == str(14 * 86400)


def test_tables_exist_with_their_keys(local_deployment):
    dynamodb = local_deployment.client("dynamodb")
    env = local_deployment.environment
    keys = {
        "HISTORY_TABLE": ["pk", "sk"],
        "JOBS_TABLE": ["jobId"],
    }
    for variable, expected in keys.items():
        table = dynamodb.describe_table(TableName=env[variable])["Table"]
        assert [k["AttributeName"] for k in table["KeySchema"]] == expected


def test_functions_exist_with_a_29_second_timeout(local_deployment):
    from local_runtime.discovery import deployed_functions

    functions = deployed_functions(local_deployment.endpoint)
    assert len(functions) == 5
    lambda_client = local_deployment.client("lambda")
    handlers = set()
    for name in functions.values():
        config = lambda_client.get_function_configuration(FunctionName=name)
        assert config["Timeout"] == 29
        handlers.add(config["Handler"])
    assert handlers == {"authorizer.handler", "connect.handler", "disconnect.handler",
                        "send_message.handler", "default.handler"}


def test_a_job_sent_to_the_deployed_queue_reaches_the_dlq_after_5_receives(local_deployment):
    sqs = local_deployment.client("sqs")
    env = local_deployment.environment
    sqs.send_message(QueueUrl=env["JOBS_QUEUE_URL"], MessageBody='{"poison": true}')
    for _ in range(5):
        received = sqs.receive_message(QueueUrl=env["JOBS_QUEUE_URL"], VisibilityTimeout=0, WaitTimeSeconds=1)
        assert len(received["Messages"]) == 1
    assert "Messages" not in sqs.receive_message(QueueUrl=env["JOBS_QUEUE_URL"], WaitTimeSeconds=0)
    moved = sqs.receive_message(QueueUrl=env["JOBS_DLQ_URL"], WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in moved] == ['{"poison": true}']
    sqs.delete_message(QueueUrl=env["JOBS_DLQ_URL"], ReceiptHandle=moved[0]["ReceiptHandle"])



def test_deployed_functions_carry_no_signing_secret_and_no_pool_of_the_stacks(local_deployment):
    # Tokens are Cognito's (RS256 against the pool's key set). moto's CloudFormation creates no user
    # pool, so the local runtime adds the emulator pool's ids and JWKS URL itself; the stacks give the
    # deployed functions neither, and no signing secret.
    from local_runtime.discovery import deployed_functions

    lambda_client = local_deployment.client("lambda")
    for name in deployed_functions(local_deployment.endpoint).values():
        env = lambda_client.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
        assert env["JOBS_QUEUE_URL"], name
        assert not [key for key in env if key.startswith("AUTH_SECRET")], name
        assert not {"USER_POOL_ID", "USER_POOL_CLIENT_ID", "COGNITO_JWKS_URL"} & set(env), name
