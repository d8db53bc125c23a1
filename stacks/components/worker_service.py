"""The ECS Fargate worker service built from `worker_image/`: autoscaled on the queue backlog, rolled
back by the deployment circuit breaker, drained gracefully on SIGTERM."""
from __future__ import annotations

from aws_cdk import Annotations, Duration
from aws_cdk import aws_applicationautoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from cloudia import metric_names
from stacks.components.grants import grant_queue, grant_secret_read, grant_table
from stacks.components.jobs_queue import JobsQueue
from stacks.components.lambda_code import ROOT
from stacks.components.log_groups import retained_log_group
from stacks.components.redis_cache import RedisEndpoint
from stacks.components.runtime_environment import runtime_environment
from stacks.components.tables import ChatTables
from stacks.components.websocket_api import ChatWebSocketApi
from stacks.config import WORKER_BASE_IMAGE, AppConfig

# The image needs only the worker and the shared package; the rest of the repository stays out.
IMAGE_EXCLUDE = ["*", "!cloudia", "!cloudia/**", "!worker_image", "!worker_image/**", "**/__pycache__"]


class WorkerService(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, vpc: ec2.IVpc,
                 jobs: JobsQueue, tables: ChatTables, redis: RedisEndpoint, api: ChatWebSocketApi,
                 key: kms.IKey | None = None) -> None:
        super().__init__(scope, construct_id)
        cluster = ecs.Cluster(self, "Cluster", vpc=vpc,
                              container_insights_v2=ecs.ContainerInsights.ENABLED)
        # prod: the data key (keys.py). FinOps, dev (None): the AWS-managed aws/secretsmanager key.
        self.llm_api_key = secretsmanager.Secret(
            self, "LlmApiKey", description="cloud-ia LLM provider API key (set the value after deploy)",
            encryption_key=key)

        task = ecs.FargateTaskDefinition(
            self, "Task",
            cpu=config.worker_cpu,
            memory_limit_mib=config.worker_memory_mb,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,  # Graviton: cheaper per vCPU-hour
                operating_system_family=ecs.OperatingSystemFamily.LINUX),
        )
        environment = {
            **runtime_environment(config, service_name="worker", jobs=jobs, tables=tables, redis=redis),
            "WS_MANAGEMENT_ENDPOINT": api.management_endpoint,
            "LLM_PROVIDER": config.llm_provider,
            "LLM_MODEL": config.llm_model,
            "LLM_API_KEY_SECRET_ARN": self.llm_api_key.secret_arn,
        }
        self.llm_fallback_api_key: secretsmanager.Secret | None = None
        if config.llm_fallback_provider:
            self.llm_fallback_api_key = secretsmanager.Secret(
                self, "LlmFallbackApiKey",
                description="cloud-ia fallback LLM provider API key (set the value after deploy)",
                encryption_key=key)
            environment.update({
                "LLM_FALLBACK_PROVIDER": config.llm_fallback_provider,
                "LLM_FALLBACK_MODEL": config.llm_fallback_model,
                "LLM_FALLBACK_API_KEY_SECRET_ARN": self.llm_fallback_api_key.secret_arn,
            })
        task.add_container(
            "Worker",
            image=ecs.ContainerImage.from_asset(
                str(ROOT), file="worker_image/Dockerfile", exclude=IMAGE_EXCLUDE,
                platform=ecr_assets.Platform.LINUX_ARM64,
                # The production Python's base (stacks/config.py), the functions' minor version.
                build_args={"BASE_IMAGE": WORKER_BASE_IMAGE}),
            environment=environment,
            logging=ecs.LogDrivers.aws_logs(stream_prefix="worker",
                                            log_group=retained_log_group(self, "Logs", config, key)),
            # ECS sends SIGTERM, waits this long, then SIGKILL: above the worker's own drain bound,
            # which lets the longest answer finish (see AppConfig.drain_covers_longest_job).
            stop_timeout=Duration.seconds(config.worker_stop_timeout_s),
            health_check=ecs.HealthCheck(command=["CMD", "python", "-m", "worker.healthcheck"],
                                         interval=Duration.seconds(30), retries=3,
                                         start_period=Duration.seconds(30)),
            readonly_root_filesystem=False,
        )
        if not config.drain_covers_longest_job:
            Annotations.of(self).add_warning_v2(
                "cloudia:drainShorterThanLongestJob",
                f"worker_shutdown_grace_s ({config.resilience.worker_shutdown_grace_s} s) is shorter than the "
                f"longest job ({config.job_deadline_s} s, from llm_max_tokens at llm_min_tokens_per_s): answers "
                "still running when a task stops are handed back and called again")
        self.service = ecs.FargateService(
            self, "Service",
            cluster=cluster,
            task_definition=task,
            desired_count=config.worker_min_tasks,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[redis.client_security_group] if redis.client_security_group else None,
            # A deployment whose tasks keep failing rolls back by itself.
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            min_healthy_percent=100,
            max_healthy_percent=200,
            enable_execute_command=False,
        )
        # The calls the worker makes (grants.py), and no other. The jobs queue: the consumer's receive,
        # the decisions' delete and change_message_visibility, and send_message for a requeue (a fresh
        # delayed copy, worker/decisions.py).
        role = task.task_role
        grant_queue(jobs.queue, role, "ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility", "SendMessage")
        # The DLQ: permanent failures are sent there at once; the sweep receives what SQS dead-lettered
        # itself, replaces it by a copy that says why (send, delete) or looks again later (visibility).
        grant_queue(jobs.dlq, role, "SendMessage", "ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility")
        # (DeleteMessageBatch is authorized as DeleteMessage.) The history: the answer's or the failure's
        # entry, put in one TransactWriteItems with the job's final state (each item needs the action it
        # performs), and .latest (query, the context when the cache is cold).
        grant_table(tables.history, role, "PutItem", "Query")
        # JobStore.get (get_item); .start_call, .beat, .finish (alone or in the transaction above),
        # .end_failed_call (update_item).
        grant_table(tables.jobs, role, "GetItem", "UpdateItem")
        for llm_key in (self.llm_api_key, self.llm_fallback_api_key):
            if llm_key is not None:
                grant_secret_read(llm_key, task.task_role)
                NagSuppressions.add_resource_suppressions(llm_key, [NagPackSuppression(
                    id="AwsSolutions-SMG4", reason=(
                        "A key issued by the LLM provider: Secrets Manager cannot rotate it; it is "
                        "replaced by hand when the provider issues a new one."))])
        if redis.auth_secret is not None:
            grant_secret_read(redis.auth_secret, task.task_role)
        api.grant_post_to_connections(task.task_role)

        NagSuppressions.add_resource_suppressions(task, [
            NagPackSuppression(id="AwsSolutions-ECS2", reason=(
                "The environment holds only names, URLs and settings; the secrets (LLM key, Redis AUTH) "
                "are read from Secrets Manager by ARN at start-up.")),
            NagPackSuppression(id="AwsSolutions-IAM5", reason=(
                "ecr:GetAuthorizationToken has no resource-level permission (execution role); the "
                "Management API grant is POST to @connections of this API stage only, whose connection "
                "ids are not known in advance."),
                applies_to=["Resource::*",
                            {"regex": "/^Resource::arn:[^:]+:execute-api:.*\\/POST\\/@connections\\/\\*$/g"}]),
        ], apply_to_children=True)

        # Scale on the backlog: one more task per `worker_scale_out_backlog` waiting jobs.
        scaling = self.service.auto_scale_task_count(min_capacity=config.worker_min_tasks,
                                                     max_capacity=config.worker_max_tasks)
        step = config.worker_scale_out_backlog
        scaling.scale_on_metric(
            "ScaleOnBacklog",
            metric=jobs.queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(1)),
            scaling_steps=[
                autoscaling.ScalingInterval(upper=0, change=-1),
                autoscaling.ScalingInterval(lower=step, change=+1),
                autoscaling.ScalingInterval(lower=step * 4, change=+2),
            ],
            adjustment_type=autoscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            cooldown=Duration.minutes(2),
        )
        # ... and on the jobs in flight: the tasks' busy slots, kept near `worker_target_slots_in_use`
        # percent on average. Answers take seconds to minutes, so a fleet can be full with nothing
        # waiting yet; the backlog policy then only sees the overflow. (The larger of the two wins.)
        scaling.scale_to_track_custom_metric(
            "TrackSlotsInUse",
            metric=cloudwatch.Metric(namespace=metric_names.NAMESPACE, metric_name=metric_names.SLOTS_IN_USE,
                                     dimensions_map={"service": metric_names.WORKER_SERVICE},
                                     statistic="Average", period=Duration.minutes(1)),
            target_value=config.worker_target_slots_in_use,
            scale_in_cooldown=Duration.minutes(5),
            scale_out_cooldown=Duration.minutes(1),
        )
