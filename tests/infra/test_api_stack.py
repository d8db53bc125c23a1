"""The functions (both targets) and the WebSocket API (aws target)."""
import json

from aws_cdk.assertions import Match

from cloudia.routes import AUTHORIZER, ROUTES
from cloudia.routes import HANDLERS as HANDLER_PURPOSES

HANDLERS = set(HANDLER_PURPOSES)


def functions(synth) -> dict:
    found = synth.templates["api"].find_resources("AWS::Lambda::Function")
    return {v["Properties"]["Handler"].split(".")[0]: v["Properties"] for v in found.values()}


def test_one_function_per_route_handler(any_synth):
    assert set(functions(any_synth)) == HANDLERS


def test_functions_time_out_at_29_seconds(any_synth):
    assert {p["Timeout"] for p in functions(any_synth).values()} == {29}


def test_functions_use_a_current_python_runtime(any_synth):
    for props in functions(any_synth).values():
        major, minor = props["Runtime"].removeprefix("python").split(".")
        assert (int(major), int(minor)) >= (3, 12)


def test_functions_reserve_no_concurrency_by_default(any_synth):
    # A new account's quota (10 concurrent executions) leaves nothing to reserve: the default deploys there.
    for props in functions(any_synth).values():
        assert "ReservedConcurrentExecutions" not in props


def test_a_reserved_concurrency_setting_caps_every_function():
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from app import build_app
    from tests.infra.conftest import cdk_context

    # As `-c function_reserved_concurrency=5` passes it: a string, typed by the config.
    app = build_app(cdk_context(target="local", function_reserved_concurrency="5"))
    api = next(s for s in app.node.children if isinstance(s, cdk.Stack) and s.stack_name.endswith("-api"))
    found = Template.from_stack(api).find_resources("AWS::Lambda::Function")
    assert len(found) == len(HANDLERS)
    assert {f["Properties"]["ReservedConcurrentExecutions"] for f in found.values()} == {5}


def test_functions_are_traced_and_carry_powertools_settings(any_synth):
    for props in functions(any_synth).values():
        assert props["TracingConfig"] == {"Mode": "Active"}
        env = props["Environment"]["Variables"]
        assert env["POWERTOOLS_SERVICE_NAME"] == "chat-api"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "CloudIa"
        assert env["REDIS_TIMEOUT_MS"] == "500" and env["DYNAMODB_TIMEOUT_MS"] == "1000"


def test_functions_learn_names_from_the_state_stack(any_synth):
    env = functions(any_synth)["send_message"]["Environment"]["Variables"]
    for key in ("JOBS_QUEUE_URL", "HISTORY_TABLE", "JOBS_TABLE"):
        assert "Fn::ImportValue" in json.dumps(env[key]), key


def test_function_logs_are_retained_30_days(any_synth):
    groups = any_synth.templates["api"].find_resources("AWS::Logs::LogGroup")
    function_groups = [g for k, g in groups.items() if k.startswith("Functions")]
    assert len(function_groups) == len(HANDLERS)
    assert {g["Properties"]["RetentionInDays"] for g in function_groups} == {30}


def policy_actions(synth, handler: str) -> set[str]:
    """Every action the handler's role is allowed, from its default policy."""
    template = synth.templates["api"]
    role_ref = next(v["Properties"]["Role"]["Fn::GetAtt"][0]
                    for v in template.find_resources("AWS::Lambda::Function").values()
                    if v["Properties"]["Handler"] == f"{handler}.handler")
    actions = set()
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_ref} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                found = statement["Action"]
                actions.update([found] if isinstance(found, str) else found)
    return actions


def test_only_send_message_may_enqueue_and_write_jobs(any_synth):
    assert "sqs:SendMessage" in policy_actions(any_synth, "send_message")
    for handler in HANDLERS - {"send_message"}:
        actions = policy_actions(any_synth, handler)
        assert not any(a.startswith("sqs:") for a in actions), handler
        assert "dynamodb:PutItem" not in actions, handler


def test_default_route_only_reads_history(any_synth):
    actions = policy_actions(any_synth, "default")
    assert "dynamodb:Query" in actions
    assert not {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"} & actions


def test_functions_reach_redis_inside_the_vpc_on_aws(aws_synth):
    for props in functions(aws_synth).values():
        assert props["VpcConfig"]["SubnetIds"]
        env = props["Environment"]["Variables"]
        assert json.dumps(env["REDIS_URL"]).startswith('{"Fn::Join"') and "rediss://" in json.dumps(env["REDIS_URL"])
        assert "REDIS_AUTH_SECRET_ARN" in env


def test_local_functions_use_local_redis(local_synth):
    for props in functions(local_synth).values():
        assert "VpcConfig" not in props
        env = props["Environment"]["Variables"]
        assert env["REDIS_URL"] == "redis://localhost:6379/0"
        assert "REDIS_AUTH_SECRET_ARN" not in env


def test_websocket_api_routes_by_action(aws_synth):
    template = aws_synth.templates["api"]
    template.has_resource_properties("AWS::ApiGatewayV2::Api", {
        "ProtocolType": "WEBSOCKET", "RouteSelectionExpression": "$request.body.action"})
    routes = {r["Properties"]["RouteKey"] for r in template.find_resources("AWS::ApiGatewayV2::Route").values()}
    assert routes == {"$connect", "$disconnect", "$default", "sendMessage", "retry", "ping", "history", "resume"}


def test_each_route_invokes_the_function_of_its_handler_module(aws_synth):
    """The deployed API follows the one route table (cloudia/routes.py), as the local gateway does."""
    template = aws_synth.templates["api"]
    functions_by_id = {logical_id: props["Properties"]["Handler"].split(".")[0] for logical_id, props
                       in template.find_resources("AWS::Lambda::Function").items()}
    integrations = template.find_resources("AWS::ApiGatewayV2::Integration")

    def module_of(integration_id: str) -> str:
        uri = json.dumps(integrations[integration_id]["Properties"]["IntegrationUri"])
        return next(module for logical_id, module in functions_by_id.items() if f'"{logical_id}"' in uri)

    served = {}
    for route in template.find_resources("AWS::ApiGatewayV2::Route").values():
        target = route["Properties"]["Target"]["Fn::Join"][1]  # ["integrations/", {"Ref": id}]
        served[route["Properties"]["RouteKey"]] = module_of(target[1]["Ref"])
    assert served == {key: module for key, module in ROUTES.items() if key != AUTHORIZER}


def test_connect_route_is_guarded_by_the_cognito_token_authorizer(aws_synth):
    template = aws_synth.templates["api"]
    template.has_resource_properties("AWS::ApiGatewayV2::Authorizer", {
        "AuthorizerType": "REQUEST", "IdentitySource": ["route.request.querystring.token"]})
    template.has_resource_properties("AWS::ApiGatewayV2::Route", {
        "RouteKey": "$connect", "AuthorizationType": "CUSTOM", "AuthorizerId": Match.any_value()})


def test_message_routes_return_the_handler_reply(aws_synth):
    template = aws_synth.templates["api"]
    responses = template.find_resources("AWS::ApiGatewayV2::RouteResponse")
    assert len(responses) == 6  # $default, sendMessage, retry, ping, history, resume


def test_stage_is_throttled_and_access_logged(aws_synth):
    aws_synth.templates["api"].has_resource_properties("AWS::ApiGatewayV2::Stage", {
        "DefaultRouteSettings": Match.object_like({"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100}),
        "AccessLogSettings": {"DestinationArn": Match.any_value(), "Format": Match.string_like_regexp("connectionId")},
    })


def test_only_the_redis_token_is_read_from_secrets_manager(aws_synth):
    # Cognito's public keys replaced the shared signing secret: the authorizer reads no secret, and
    # the other functions only Redis's AUTH token.
    template = aws_synth.templates["api"]
    secret_reads = {}
    for policy in template.find_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "secretsmanager:GetSecretValue" in statement["Action"]:
                for role in policy["Properties"]["Roles"]:
                    secret_reads.setdefault(role["Ref"], []).append(json.dumps(statement["Resource"]))
    roles = {v["Properties"]["Handler"].split(".")[0]: v["Properties"]["Role"]["Fn::GetAtt"][0]
             for v in template.find_resources("AWS::Lambda::Function").values()}
    assert roles["authorizer"] not in secret_reads
    for handler in HANDLERS - {"authorizer"}:
        [resource] = secret_reads[roles[handler]]
        assert "RedisAuthToken" in resource, (handler, resource)
