"""Stateful resources: what holds work and history. Kept apart from the stateless stacks, with a
removal policy chosen by stage and logical IDs that must stay stable (a change would replace data)."""
from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from constructs import Construct

from stacks.components.jobs_queue import JobsQueue
from stacks.components.tables import ChatTables
from stacks.config import AppConfig


class StateStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # prod keeps data when the stack goes away; dev cleans up after itself.
        removal = RemovalPolicy.RETAIN if config.is_prod else RemovalPolicy.DESTROY
        self.jobs = JobsQueue(self, "Jobs", config=config, removal_policy=removal)
        self.tables = ChatTables(self, "Tables", removal_policy=removal)
