"""The `aws` target's hosted chat page; its URL is what a person opens after a deploy."""
from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.components.hosted_page import HostedPage
from stacks.components.identity import ChatIdentity
from stacks.components.websocket_api import ChatWebSocketApi
from stacks.config import AppConfig


class WebStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, identity: ChatIdentity,
                 websocket: ChatWebSocketApi, key: kms.IKey | None, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.page = HostedPage(self, "Page", config=config, websocket_url=websocket.stage.url,
                               identity=identity, key=key)
        CfnOutput(self, "PageUrl", value=self.page.url, description="open this to sign in and chat")
