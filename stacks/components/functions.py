"""The WebSocket Lambda functions: one shared asset, one function per route, least-privilege grants."""
from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from cloudia.routes import HANDLERS, function_id, pascal
from stacks.components.grants import grant_queue, grant_secret_read, grant_table
from stacks.components.identity import ChatIdentity
from stacks.components.jobs_queue import JobsQueue
from stacks.components.redis_cache import RedisEndpoint
from stacks.components.runtime_environment import runtime_environment
from stacks.components.log_groups import retained_log_group
from stacks.components.lambda_code import ARCHITECTURE, RUNTIME, function_code, runtime_suppression
from stacks.components.tables import ChatTables
from stacks.config import AppConfig

SERVICE_NAME = "chat-api"


class ChatFunctions(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, jobs: JobsQueue,
                 tables: ChatTables, redis: RedisEndpoint, identity: ChatIdentity | None,
                 key: kms.IKey | None = None) -> None:
        super().__init__(scope, construct_id)
        code = function_code()
        environment = runtime_environment(config, service_name=SERVICE_NAME, jobs=jobs, tables=tables,
                                          redis=redis)
        if identity is not None:
            # The pool whose tokens the authorizer (and $connect) accept; its key set is the pool's own
            # JWKS, never configurable here (no COGNITO_JWKS_URL: that is for the local emulator only).
            # Locally `make up` adds the emulator pool's ids to the runtime environment itself.
            environment["USER_POOL_ID"] = identity.user_pool.user_pool_id
            environment["USER_POOL_CLIENT_ID"] = identity.client.user_pool_client_id

        self.functions: dict[str, lambda_.Function] = {}
        for module, purpose in HANDLERS.items():
            log_group = retained_log_group(self, f"{pascal(module)}Logs", config, key)
            self.functions[module] = lambda_.Function(
                self, function_id(module),
                description=f"cloud-ia {purpose}",
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                code=code,
                handler=f"{module}.handler",
                # API Gateway's integration limit is 29 s; every call inside has a smaller bound.
                timeout=Duration.seconds(config.resilience.lambda_timeout_s),
                memory_size=config.function_memory_mb,
                # When set, a cost cap and a bulkhead: a flood on one route cannot take every execution.
                # 0 (the default) reserves none, which a new account's concurrency quota allows.
                reserved_concurrent_executions=config.function_reserved_concurrency or None,
                environment=environment,
                log_group=log_group,
                tracing=lambda_.Tracing.ACTIVE,
                vpc=redis.vpc,
                vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS) if redis.vpc else None,
                security_groups=[redis.client_security_group] if redis.client_security_group else None,
            )

        for function in self.functions.values():
            NagSuppressions.add_resource_suppressions(function, [
                NagPackSuppression(id="AwsSolutions-IAM4", applies_to=[
                    "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
                    "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"],
                    reason="AWS's standard policies for writing the function's own logs and, in the VPC, "
                           "managing its network interfaces; nothing else."),
                NagPackSuppression(id="AwsSolutions-IAM5", applies_to=["Resource::*"],
                    reason="X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions."),
                # The runtime is the production Python, not the newest (stacks/config.py).
                runtime_suppression(),
            ], apply_to_children=True)

        # Least privilege: each function gets the calls its code makes, and no other (grants.py).
        f = self.functions
        # send_message: ChatService._enqueue (send_message).
        grant_queue(jobs.queue, f["send_message"], "SendMessage")
        # JobStore.create: the job's row and its user's history entry in one TransactWriteItems (each
        # item needs the action it performs); .remove_queued (delete_item) takes back a job that was not
        # queued; retry: .get, .retry_failed and .finish (update_item).
        grant_table(tables.jobs, f["send_message"], "PutItem", "DeleteItem", "GetItem", "UpdateItem")
        # HistoryStore: the entry's put; .remove (delete_item); .latest and .entry (query) for a
        # message's cost with a cold context cache, and for a retry's text.
        grant_table(tables.history, f["send_message"], "PutItem", "DeleteItem", "Query")
        # default: HistoryStore.since (query) for history/resume; no Scan, no other table.
        grant_table(tables.history, f["default"], "Query")
        if redis.auth_secret is not None:
            for module in ("connect", "disconnect", "send_message", "default"):
                grant_secret_read(redis.auth_secret, f[module])

    @property
    def authorizer(self) -> lambda_.Function:
        return self.functions["authorizer"]

