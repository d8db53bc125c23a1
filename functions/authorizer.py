"""`$connect` REQUEST authorizer (AWS): allow a caller whose `token` query parameter is a valid,
unexpired token of the deployment's Cognito user pool, with the user id in the authorizer context for
every later event."""
from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from cloudia import auth, ws_events
from cloudia.settings import Settings

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=ws_events.metrics_namespace())
# Read once per cold start; the authorizer needs the pool's ids and nothing of the chat service.
SETTINGS = Settings.from_env()

# What API Gateway expects from an authorizer to answer 401 (any other exception is a 500).
UNAUTHORIZED = "Unauthorized"


def allow_policy(user_id: str, method_arn: str) -> dict:
    return {
        "principalId": user_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": method_arn}],
        },
        "context": {"userId": user_id},
    }


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    logger.append_keys(connectionId=ws_events.connection_id(event))
    pool = auth.user_pool(SETTINGS)
    try:
        user_id = auth.verify_token(ws_events.query_parameter(event, "token"), pool)
    except auth.AuthError as exc:
        logger.info("connection refused", extra={"reason": exc.reason, "detail": str(exc)})
        metrics.add_metric(name="ConnectionsRefused", unit=MetricUnit.Count, value=1)
        raise Exception(UNAUTHORIZED) from None
    logger.append_keys(userId=user_id)
    metrics.add_metric(name="ConnectionsAuthorized", unit=MetricUnit.Count, value=1)
    return allow_policy(user_id, event["methodArn"])
