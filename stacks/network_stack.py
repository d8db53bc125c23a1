"""The `aws` target's network and Redis (the local target uses a local redis-server instead)."""
from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.components.network import Network
from stacks.components.redis_cache import RedisCache
from stacks.config import AppConfig


class NetworkStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, key: kms.IKey | None,
                 **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.network = Network(self, "Network", config=config, key=key)
        self.redis = RedisCache(self, "Redis", config=config, vpc=self.network.vpc, key=key)
