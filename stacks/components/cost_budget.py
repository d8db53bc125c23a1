"""FinOps: a monthly cost budget that warns on the forecast and on the actual spend."""
from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.components.keys import allow_publisher, source_conditions
from stacks.config import AppConfig


class CostBudget(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, topic: sns.ITopic,
                 topic_key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        # AWS Budgets publishes its notifications to the alarm topic, on behalf of this account's
        # budgets only (`aws:SourceAccount`, and `aws:SourceArn` in the form AWS Budgets documents).
        stack = Stack.of(self)
        budgets_of_this_account = f"arn:{stack.partition}:budgets::{stack.account}:*"
        topic.add_to_resource_policy(iam.PolicyStatement(
            sid="BudgetsOfThisAccount",
            actions=["sns:Publish"], principals=[iam.ServicePrincipal("budgets.amazonaws.com")],
            resources=[topic.topic_arn], conditions=source_conditions(stack.account, budgets_of_this_account)))
        allow_publisher(topic_key, sid="BudgetsOfThisAccount", service="budgets.amazonaws.com",
                        source_arn=budgets_of_this_account)
        subscribers = [budgets.CfnBudget.SubscriberProperty(subscription_type="SNS", address=topic.topic_arn)]

        def notify(kind: str, percent: int) -> budgets.CfnBudget.NotificationWithSubscribersProperty:
            return budgets.CfnBudget.NotificationWithSubscribersProperty(
                notification=budgets.CfnBudget.NotificationProperty(
                    notification_type=kind, comparison_operator="GREATER_THAN", threshold=percent,
                    threshold_type="PERCENTAGE"),
                subscribers=subscribers)

        self.budget = budgets.CfnBudget(
            self, "Budget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=f"cloudia-{config.stage}",
                budget_type="COST", time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=config.monthly_budget_usd, unit="USD")),
            notifications_with_subscribers=[notify("FORECASTED", 80), notify("ACTUAL", 100)],
        )
