"""Alarms, dashboard and cost budget (`aws` target: the emulators have no CloudWatch alarms or Budgets)."""
from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.components.cost_budget import CostBudget
from stacks.components.jobs_queue import JobsQueue
from stacks.components.monitoring import Monitoring
from stacks.config import AppConfig


class ObservabilityStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, jobs: JobsQueue,
                 functions: Mapping[str, lambda_.IFunction], **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.monitoring = Monitoring(self, "Monitoring", config=config, jobs=jobs, functions=functions)
        self.budget = CostBudget(self, "Cost", config=config, topic=self.monitoring.topic,
                                 topic_key=self.monitoring.topic_key)
