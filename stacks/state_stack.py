"""Stateful resources: what holds work, history and users. Kept apart from the stateless stacks, with
a removal policy chosen by stage and logical IDs that must stay stable (a change would replace data)."""
from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from constructs import Construct

from stacks.components.identity import ChatIdentity
from stacks.components.jobs_queue import JobsQueue
from stacks.components.keys import data_key
from stacks.components.tables import ChatTables
from stacks.config import AppConfig


class StateStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # prod keeps data when the stack goes away; dev cleans up after itself.
        removal = RemovalPolicy.RETAIN if config.is_prod else RemovalPolicy.DESTROY
        # prod: the one data key of the deployment, passed down to every stack (keys.py); dev: None.
        self.key = data_key(self, config)
        self.jobs = JobsQueue(self, "Jobs", config=config, removal_policy=removal, key=self.key)
        self.tables = ChatTables(self, "Tables", removal_policy=removal, key=self.key)
        # The user pool on AWS; locally `make up` creates it in the emulator (moto's CloudFormation cannot).
        self.identity: ChatIdentity | None = None
        if config.is_aws:
            self.identity = ChatIdentity(self, "Identity", config=config, removal_policy=removal)
            # Output by the stack that owns the pool (an output of an imported value is a lint warning).
            CfnOutput(self, "UserPoolId", value=self.identity.user_pool.user_pool_id,
                      description="the pool users are invited to (python -m cloudia.users invite)")
            CfnOutput(self, "UserPoolClientId", value=self.identity.client.user_pool_client_id,
                      description="the page's app client")
