#!/usr/bin/env python3
"""The cloud-ia CDK app. `-c target=aws|local` chooses what is deployed (see docs/architecture.md):

  aws    network + Redis, state (+ user pool), API (functions + WebSocket API), worker (ECS),
         observability, web (the hosted chat page), and `cloudia-aws-account`: the account-wide
         API Gateway logging setting, one stack per account and region shared by every stage
  local  state and functions only: the emulator lacks the rest, which runs as local processes
         (`make up` also creates the user pool in the emulator)
"""
from __future__ import annotations

import os

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.account_stack import AccountStack
from stacks.api_stack import ApiStack
from stacks.components.redis_cache import RedisEndpoint
from stacks.config import AppConfig
from stacks.network_stack import NetworkStack
from stacks.observability_stack import ObservabilityStack
from stacks.state_stack import StateStack
from stacks.web_stack import WebStack
from stacks.worker_stack import WorkerStack


def build_app(context: dict | None = None) -> cdk.App:
    app = cdk.App(context=context) if context is not None else cdk.App()
    config = AppConfig.from_context({
        key: app.node.try_get_context(key)
        for key in ("target", "stage", "settings", "resilience", *AppConfig.__dataclass_fields__)
        if app.node.try_get_context(key) is not None
    })
    env = cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION"))

    state = StateStack(app, config.stack_name("state"), config=config, env=env,
                       description="cloud-ia state: jobs queue + DLQ, history and jobs tables"
                                   + (", user pool" if config.is_aws else ""))
    # prod: the data key every stack encrypts with (stacks/components/keys.py); dev: None.
    key = state.key
    if config.is_aws:
        network = NetworkStack(app, config.stack_name("network"), config=config, env=env, key=key,
                               description="cloud-ia VPC and ElastiCache Redis")
        redis = network.redis.endpoint
    else:
        network = None
        redis = RedisEndpoint(url=config.local_redis_url)
    api = ApiStack(app, config.stack_name("api"), config=config, env=env, jobs=state.jobs,
                   tables=state.tables, redis=redis, identity=state.identity, key=key,
                   description="cloud-ia WebSocket functions" + (" and API" if config.is_aws else ""))
    if config.is_aws:
        # The WebSocket stage logs with the account's CloudWatch role, which this stack sets.
        account = AccountStack(app, env=env, description="cloud-ia account-wide settings (API Gateway "
                                                          "CloudWatch role), shared by every stage")
        api.add_stack_dependency(account)
        # The aws target has all three (the network above, the WebSocket API and the user pool).
        assert network is not None and api.websocket is not None and state.identity is not None
        WorkerStack(app, config.stack_name("worker"), config=config, env=env, vpc=network.network.vpc,
                    jobs=state.jobs, tables=state.tables, redis=redis, api=api.websocket, key=key,
                    description="cloud-ia LLM worker on ECS Fargate")
        ObservabilityStack(app, config.stack_name("observability"), config=config, env=env, jobs=state.jobs,
                           functions=api.functions.functions,
                           description="cloud-ia alarms, dashboard and cost budget")
        WebStack(app, config.stack_name("web"), config=config, env=env, identity=state.identity,
                 websocket=api.websocket, key=key, description="cloud-ia hosted chat page (S3 + CloudFront)")
    cdk.Tags.of(app).add("project", "cloud-ia")
    cdk.Tags.of(app).add("stage", config.stage)
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app


if __name__ == "__main__":
    build_app().synth()
