"""Alarms, the topic they notify and a dashboard: a message in the DLQ, a job waiting too long,
function errors and throttles, and the worker's circuit opening."""
from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from cloudia import metric_names
from stacks.components.jobs_queue import JobsQueue
from stacks.components.keys import allow_publisher, source_conditions, topic_key
from stacks.config import AppConfig

# The worker emits this metric (Powertools, service "worker") on every transition to open.
WORKER_SERVICE_DIMENSION = {"service": "worker"}


class Monitoring(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, jobs: JobsQueue,
                 functions: Mapping[str, lambda_.IFunction]) -> None:
        super().__init__(scope, construct_id)
        # Encrypted in both stages, with a customer-managed key: CloudWatch alarms cannot publish to a
        # topic under the AWS-managed alias/aws/sns key, whose policy names no service (keys.py).
        self.topic_key = topic_key(self, config)
        self.topic = sns.Topic(self, "AlarmTopic", display_name="cloud-ia alarms", enforce_ssl=True,
                               master_key=self.topic_key)
        # This account's alarms, and nothing else, may publish and use the key for it.
        stack = Stack.of(self)
        alarms_of_this_account = stack.format_arn(service="cloudwatch", resource="alarm", resource_name="*",
                                                  arn_format=ArnFormat.COLON_RESOURCE_NAME)
        self.topic.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarmsOfThisAccount",
            actions=["sns:Publish"], principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            resources=[self.topic.topic_arn], conditions=source_conditions(stack.account, alarms_of_this_account)))
        allow_publisher(self.topic_key, sid="CloudWatchAlarmsOfThisAccount", service="cloudwatch.amazonaws.com",
                        source_arn=alarms_of_this_account)
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        notify = actions.SnsAction(self.topic)
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        def alarm(name: str, metric: cloudwatch.IMetric, threshold: float, description: str) -> None:
            created = cloudwatch.Alarm(
                self, name, metric=metric, threshold=threshold, evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=description)
            created.add_alarm_action(notify)
            self.alarms[name] = created

        minute = Duration.minutes(1)
        alarm("DlqNotEmpty", jobs.dlq.metric_approximate_number_of_messages_visible(period=minute, statistic="Maximum"),
              1, "A job is in the DLQ: its user was told; inspect and redrive with `make dlq`.")
        alarm("OldestJobTooOld",
              jobs.queue.metric_approximate_age_of_oldest_message(period=minute, statistic="Maximum"),
              config.oldest_message_alarm_s, "Jobs wait too long: the worker is down, too slow or its circuit is open.")
        circuit_opened = cloudwatch.Metric(
            namespace=metric_names.NAMESPACE, metric_name=metric_names.CIRCUIT_OPENED,
            dimensions_map=WORKER_SERVICE_DIMENSION, statistic="Sum", period=minute)
        alarm("CircuitOpened", circuit_opened, 1, "The worker's circuit breaker opened: the LLM API is failing.")
        for module, function in functions.items():
            name = "".join(p.capitalize() for p in module.split("_"))
            alarm(f"{name}Errors", function.metric_errors(period=minute, statistic="Sum"), 1,
                  f"The {module} function failed.")
            alarm(f"{name}Throttles", function.metric_throttles(period=minute, statistic="Sum"), 1,
                  f"The {module} function was throttled (its reserved concurrency or the account's limit reached).")

        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"cloudia-{config.stage}")
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Jobs queue", left=[
                jobs.queue.metric_approximate_number_of_messages_visible(period=minute),
                jobs.queue.metric_number_of_messages_deleted(period=minute)],
                right=[jobs.queue.metric_approximate_age_of_oldest_message(period=minute)]),
            cloudwatch.GraphWidget(title="DLQ and circuit", left=[
                jobs.dlq.metric_approximate_number_of_messages_visible(period=minute)], right=[circuit_opened]),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Function errors", left=[
                f.metric_errors(period=minute) for f in functions.values()]),
            cloudwatch.GraphWidget(title="Function duration p99", left=[
                f.metric_duration(period=minute, statistic="p99") for f in functions.values()]),
        )
