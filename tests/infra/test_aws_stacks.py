"""Network, Redis, worker and observability: the `aws` target only."""
from aws_cdk.assertions import Match

from cloudia import metric_names
from stacks.config import AppConfig
from tests.infra.test_config import cdk_json_context


def test_dev_vpc_has_one_nat_gateway_for_cost(aws_synth):
    aws_synth.templates["network"].resource_count_is("AWS::EC2::NatGateway", 1)


def test_prod_vpc_has_a_nat_gateway_per_az(aws_prod_synth):
    aws_prod_synth.templates["network"].resource_count_is("AWS::EC2::NatGateway", 2)


def test_dynamodb_traffic_skips_the_nat(aws_synth):
    aws_synth.templates["network"].has_resource_properties("AWS::EC2::VPCEndpoint", {
        "VpcEndpointType": "Gateway", "ServiceName": Match.object_like({"Fn::Join": Match.any_value()})})
    endpoints = aws_synth.templates["network"].find_resources("AWS::EC2::VPCEndpoint")
    assert len(endpoints) == 2


def test_rejected_traffic_is_flow_logged(aws_synth):
    aws_synth.templates["network"].has_resource_properties("AWS::EC2::FlowLog", {"TrafficType": "REJECT"})


def test_redis_has_tls_auth_and_encryption_at_rest(aws_synth):
    aws_synth.templates["network"].has_resource_properties("AWS::ElastiCache::ReplicationGroup", {
        "TransitEncryptionEnabled": True,
        "AtRestEncryptionEnabled": True,
        "AuthToken": Match.object_like(
            {"Fn::Join": Match.array_with([Match.array_with(["{{resolve:secretsmanager:"])])}),
    })


def test_redis_fails_over_automatically_in_prod_only(aws_synth, aws_prod_synth):
    aws_prod_synth.templates["network"].has_resource_properties("AWS::ElastiCache::ReplicationGroup", {
        "AutomaticFailoverEnabled": True, "MultiAZEnabled": True, "NumCacheClusters": 2})
    aws_synth.templates["network"].has_resource_properties("AWS::ElastiCache::ReplicationGroup", {
        "AutomaticFailoverEnabled": False, "NumCacheClusters": 1})


def test_only_redis_clients_reach_redis(aws_synth):
    aws_synth.templates["network"].has_resource_properties("AWS::EC2::SecurityGroupIngress", {
        "FromPort": 6379, "ToPort": 6379, "SourceSecurityGroupId": Match.any_value()})


def worker_container(synth) -> dict:
    task = next(iter(synth.templates["worker"].find_resources("AWS::ECS::TaskDefinition").values()))
    return task["Properties"]["ContainerDefinitions"][0]


def test_worker_stop_timeout_above_its_drain_bound_which_lets_the_longest_answer_finish(aws_synth):
    config = AppConfig.from_context(cdk_json_context())
    container = worker_container(aws_synth)
    assert 120 >= container["StopTimeout"] > config.resilience.worker_shutdown_grace_s >= config.job_deadline_s


def test_worker_has_a_health_check(aws_synth):
    assert worker_container(aws_synth)["HealthCheck"]["Command"] == ["CMD", "python", "-m", "worker.healthcheck"]


def test_worker_reads_the_llm_key_from_secrets_manager(aws_synth):
    env = {e["Name"]: e["Value"] for e in worker_container(aws_synth)["Environment"]}
    assert "LLM_API_KEY" not in env
    assert env["LLM_API_KEY_SECRET_ARN"] == {"Ref": Match.string_like_regexp("WorkerLlmApiKey")} or \
        "WorkerLlmApiKey" in str(env["LLM_API_KEY_SECRET_ARN"])


def test_worker_deployment_circuit_breaker_rolls_back(aws_synth):
    aws_synth.templates["worker"].has_resource_properties("AWS::ECS::Service", {
        "DeploymentConfiguration": Match.object_like({
            "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}})})


def test_worker_autoscales_on_queue_backlog_and_on_the_jobs_in_flight(aws_synth):
    template = aws_synth.templates["worker"]
    template.has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
        "MinCapacity": 1, "MaxCapacity": 4})
    # the backlog: step scaling out and in (two policies)
    template.has_resource_properties("AWS::CloudWatch::Alarm", {
        "MetricName": "ApproximateNumberOfMessagesVisible", "Namespace": "AWS/SQS"})
    # the jobs in flight: the worker's busy slots (the metric its consumer publishes), tracked at 70 %
    template.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": Match.object_like({
            "TargetValue": 70,
            "CustomizedMetricSpecification": Match.object_like({
                "MetricName": metric_names.SLOTS_IN_USE, "Namespace": metric_names.NAMESPACE,
                "Dimensions": [{"Name": "service", "Value": metric_names.WORKER_SERVICE}],
                "Statistic": "Average"})})})
    template.resource_count_is("AWS::ApplicationAutoScaling::ScalingPolicy", 3)


def test_worker_may_push_answers_through_the_management_api(aws_synth):
    policies = aws_synth.templates["worker"].find_resources("AWS::IAM::Policy")
    assert "execute-api:ManageConnections" in str(policies)


def alarms(synth) -> dict:
    found = synth.templates["observability"].find_resources("AWS::CloudWatch::Alarm")
    return {k: v["Properties"] for k, v in found.items()}


def test_alarm_on_any_message_in_the_dlq(aws_synth):
    dlq = next(p for k, p in alarms(aws_synth).items() if "DlqNotEmpty" in k)
    assert dlq["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert dlq["Threshold"] == 1 and dlq["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_alarm_on_the_oldest_message_age(aws_synth):
    oldest = next(p for k, p in alarms(aws_synth).items() if "OldestJobTooOld" in k)
    assert oldest["MetricName"] == "ApproximateAgeOfOldestMessage" and oldest["Threshold"] == 300


def test_alarms_on_every_function_error_and_throttle(aws_synth):
    names = [p["MetricName"] for p in alarms(aws_synth).values()]
    assert names.count("Errors") == 5 and names.count("Throttles") == 5


def test_alarm_on_the_worker_circuit_opening(aws_synth):
    circuit = next(p for k, p in alarms(aws_synth).items() if "CircuitOpened" in k)
    assert (circuit["Namespace"], circuit["MetricName"]) == ("CloudIa", "CircuitOpened")
    assert circuit["Dimensions"] == [{"Name": "service", "Value": "worker"}]


def test_every_alarm_notifies_the_topic(aws_synth):
    for props in alarms(aws_synth).values():
        assert props["AlarmActions"] == [{"Ref": Match.string_like_regexp("AlarmTopic")}] or \
            "AlarmTopic" in str(props["AlarmActions"])


def test_budget_warns_on_forecast_and_actual_spend(aws_synth):
    aws_synth.templates["observability"].has_resource_properties("AWS::Budgets::Budget", {
        "Budget": Match.object_like({"BudgetLimit": {"Amount": 50, "Unit": "USD"}, "TimeUnit": "MONTHLY"}),
        "NotificationsWithSubscribers": Match.array_with([
            Match.object_like({"Notification": Match.object_like({"NotificationType": "FORECASTED"})}),
            Match.object_like({"Notification": Match.object_like({"NotificationType": "ACTUAL"})})]),
    })


def test_dashboard_exists(aws_synth):
    aws_synth.templates["observability"].resource_count_is("AWS::CloudWatch::Dashboard", 1)


# The emulators skip these types silently: the local target must not depend on them.
EMULATOR_LACKS = ("AWS::ElastiCache::", "AWS::ApiGatewayV2::", "AWS::CloudWatch::Alarm", "AWS::ECS::",
                  "AWS::Budgets::", "AWS::DynamoDB::GlobalTable", "AWS::Cognito::", "AWS::CloudFront::")


def test_local_target_uses_only_what_the_emulator_has(local_synth):
    assert set(local_synth.templates) == {"state", "api"}
    for template in local_synth.templates.values():
        types = {r["Type"] for r in template.to_json()["Resources"].values()}
        assert not [t for t in types if t.startswith(EMULATOR_LACKS)]


def test_a_configured_fallback_provider_gets_its_own_key_secret():
    from aws_cdk.assertions import Template

    from app import build_app
    from tests.infra.conftest import cdk_context

    app = build_app(cdk_context(target="aws", settings={**cdk_json_context()["settings"],
                                                         "llm_fallback_provider": "anthropic",
                                                         "llm_fallback_model": "claude-haiku-4-5"}))
    worker = Template.from_stack(app.node.find_child("cloudia-aws-dev-worker"))
    task = next(iter(worker.find_resources("AWS::ECS::TaskDefinition").values()))
    container = task["Properties"]["ContainerDefinitions"][0]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["LLM_FALLBACK_PROVIDER"] == "anthropic" and env["LLM_FALLBACK_MODEL"] == "claude-haiku-4-5"
    assert "LlmFallbackApiKey" in str(env["LLM_FALLBACK_API_KEY_SECRET_ARN"])
    worker.resource_count_is("AWS::SecretsManager::Secret", 2)


def test_without_a_fallback_provider_the_worker_has_no_fallback_settings(aws_synth):
    env = {e["Name"] for e in worker_container(aws_synth)["Environment"]}
    assert not {n for n in env if n.startswith("LLM_FALLBACK")}
