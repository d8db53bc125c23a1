"""The stateless front: the WebSocket Lambda functions and, on AWS, the API Gateway WebSocket API."""
from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.components.functions import ChatFunctions
from stacks.components.identity import ChatIdentity
from stacks.components.jobs_queue import JobsQueue
from stacks.components.redis_cache import RedisEndpoint
from stacks.components.tables import ChatTables
from stacks.components.websocket_api import ChatWebSocketApi
from stacks.config import AppConfig


class ApiStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, jobs: JobsQueue,
                 tables: ChatTables, redis: RedisEndpoint, identity: ChatIdentity | None,
                 key: kms.IKey | None, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.functions = ChatFunctions(self, "Functions", config=config, jobs=jobs, tables=tables,
                                       redis=redis, identity=identity, key=key)
        self.websocket: ChatWebSocketApi | None = None
        if config.is_aws:
            self.websocket = ChatWebSocketApi(self, "WebSocket", config=config, functions=self.functions, key=key)
            CfnOutput(self, "WebSocketUrl", value=self.websocket.stage.url)
