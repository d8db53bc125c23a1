"""The stateless front: the WebSocket Lambda functions and, on AWS, the API Gateway WebSocket API."""
from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from stacks.components.functions import ChatFunctions
from stacks.components.jobs_queue import JobsQueue
from stacks.components.redis_cache import RedisEndpoint
from stacks.components.tables import ChatTables
from stacks.components.websocket_api import ChatWebSocketApi
from stacks.config import AppConfig


class ApiStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, jobs: JobsQueue,
                 tables: ChatTables, redis: RedisEndpoint, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        auth_secret = None
        if config.is_aws:
            auth_secret = secretsmanager.Secret(
                self, "TokenSigningSecret",
                description="cloud-ia connection token signing secret (HS256)",
                generate_secret_string=secretsmanager.SecretStringGenerator(password_length=64,
                                                                            exclude_punctuation=True),
            )
            NagSuppressions.add_resource_suppressions(auth_secret, [NagPackSuppression(
                id="AwsSolutions-SMG4", reason=(
                    "Rotating the signing secret invalidates every connection token at once; it is "
                    "rotated by hand in a planned window (tokens live one hour)."))])
        self.functions = ChatFunctions(self, "Functions", config=config, jobs=jobs, tables=tables,
                                       redis=redis, auth_secret=auth_secret)
        self.websocket: ChatWebSocketApi | None = None
        if config.is_aws:
            self.websocket = ChatWebSocketApi(self, "WebSocket", config=config, functions=self.functions)
            CfnOutput(self, "WebSocketUrl", value=self.websocket.stage.url)
