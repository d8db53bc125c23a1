"""The `aws` target's ECS worker (locally the same worker code runs as a process)."""
from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.components.jobs_queue import JobsQueue
from stacks.components.redis_cache import RedisEndpoint
from stacks.components.tables import ChatTables
from stacks.components.websocket_api import ChatWebSocketApi
from stacks.components.worker_service import WorkerService
from stacks.config import AppConfig


class WorkerStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, vpc: ec2.IVpc,
                 jobs: JobsQueue, tables: ChatTables, redis: RedisEndpoint, api: ChatWebSocketApi,
                 key: kms.IKey | None, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.worker = WorkerService(self, "Worker", config=config, vpc=vpc, jobs=jobs, tables=tables,
                                    redis=redis, api=api, key=key)
