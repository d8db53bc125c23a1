"""API Gateway v2 WebSocket API: the routes, the token authorizer, stage throttling and access logs."""
from __future__ import annotations

import json
from typing import cast

from aws_cdk import Stack
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from cloudia.routes import MESSAGE_ROUTES

from stacks.components.functions import ChatFunctions
from stacks.components.log_groups import retained_log_group
from stacks.config import AppConfig

# Routes by the frame's `action` (architecture: client <-> backend protocol).
ROUTE_SELECTION = "$request.body.action"
ACCESS_LOG_FORMAT = json.dumps({
    "requestId": "$context.requestId", "connectionId": "$context.connectionId",
    "routeKey": "$context.routeKey", "eventType": "$context.eventType", "status": "$context.status",
    "ip": "$context.identity.sourceIp", "requestTime": "$context.requestTime",
    "integrationLatency": "$context.integrationLatency", "error": "$context.error.message",
    "authorizerError": "$context.authorizer.error",
})


class ChatWebSocketApi(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig,
                 functions: ChatFunctions, key: kms.IKey | None = None) -> None:
        super().__init__(scope, construct_id)
        f = functions.functions

        def route(module: str, **extra) -> apigw.WebSocketRouteOptions:
            # return_response: the handler's body is the caller's reply (queued, pong, error ...).
            return apigw.WebSocketRouteOptions(
                integration=integrations.WebSocketLambdaIntegration(f"{module}Integration", f[module]),
                **extra)

        self.api = apigw.WebSocketApi(
            self, "Api",
            description="cloud-ia chat",
            route_selection_expression=ROUTE_SELECTION,
            connect_route_options=route("connect", authorizer=authorizers.WebSocketLambdaAuthorizer(
                "TokenAuthorizer", functions.authorizer, identity_source=["route.request.querystring.token"])),
            disconnect_route_options=route("disconnect"),
            default_route_options=route("default", return_response=True),
        )
        for route_key, module in MESSAGE_ROUTES.items():
            self.api.add_route(route_key, integration=route(module).integration, return_response=True)

        # API Gateway writes these with the account's CloudWatch role, which the account stack owns
        # (stacks/account_stack.py): one per account and region, shared by every stage.
        access_logs = retained_log_group(self, "AccessLogs", config, key)
        self.stage = apigw.WebSocketStage(
            self, "Stage",
            web_socket_api=self.api,
            stage_name=config.stage,
            auto_deploy=True,
            # Caps cost and protects the functions: above this API Gateway answers 429 itself.
            throttle=apigw.ThrottleSettings(rate_limit=config.websocket_rate_limit,
                                            burst_limit=config.websocket_burst_limit),
        )
        cfn_stage = cast(apigw.CfnStage, self.stage.node.default_child)
        cfn_stage.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=access_logs.log_group_arn, format=ACCESS_LOG_FORMAT)
        cfn_stage.default_route_settings = apigw.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=config.websocket_rate_limit,
            throttling_burst_limit=config.websocket_burst_limit,
            logging_level="ERROR", data_trace_enabled=False)
        # API Gateway accepts an authorizer on $connect only; later frames ride the authorized connection.
        NagSuppressions.add_resource_suppressions(self.api, [NagPackSuppression(
            id="AwsSolutions-APIG4", reason=(
                "A WebSocket API authorizes once, on $connect (the token authorizer); API Gateway allows "
                "no authorizer on other routes, which run on the already authorized connection."))],
            apply_to_children=True)

    @property
    def management_endpoint(self) -> str:
        """The `@connections` endpoint the worker posts answers to."""
        return self.stage.callback_url

    def grant_post_to_connections(self, grantee: iam.IGrantable) -> iam.Grant:
        """`@connections` POST on this stage only: `post_to_connection` is the one Management API call
        the worker makes (cloudia/push.py; a gone connection is dropped from Redis, never deleted
        through the API), so neither GET nor DELETE is granted (the CDK's grant allows every method)."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["execute-api:ManageConnections"],
            resource_arns=[Stack.of(self).format_arn(
                service="execute-api", resource=self.api.api_id,
                resource_name=f"{self.stage.stage_name}/POST/@connections/*")])
