"""`python -m cloudia.deploy` end to end against the emulator, with the CDK CLI replaced by a runner that
records its command (and, for the deploy, creates the stacks' outputs as `cdk deploy` would)."""
from __future__ import annotations

import io

from cloudia.deploy import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, main
from tests.deploy.conftest import (REGION, bootstrap, create_stack, deploy_worker_stack, stub_fargate_quota,
                                   stub_lambda_account)

DEPLOY = "npx cdk deploy --all -c target=aws -c stage=dev"


class RecordingRunner:
    def __init__(self, on_run=None, code: int = 0):
        self.calls: list[tuple[list[str], dict]] = []
        self.on_run, self.code = on_run, code

    def __call__(self, command, env, cwd) -> int:
        self.calls.append((list(command), dict(env)))
        if self.on_run:
            self.on_run()
        return self.code


def run(argv, clients, host, runner=None) -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, clients=clients, host=host, runner=runner or RecordingRunner(), functions=5, out=out)
    return code, out.getvalue()


def ready(clients, key_set=True):
    bootstrap(clients)
    if key_set is not None:
        deploy_worker_stack(clients, key_set=key_set)
    stub_lambda_account(clients, limit=1000, unreserved=1000)
    stub_fargate_quota(clients, vcpu=16.0)


def test_check_only_when_all_is_good_says_ok_and_the_command_it_would_run(clients, host):
    ready(clients)
    runner = RecordingRunner()
    code, out = run(["--check-only", "-c", "alarm_email=ops@example.com"], clients, host, runner)
    assert code == EXIT_OK, out
    assert "0 blocking, 0 warnings: ready; the deploy would run: " + DEPLOY + \
        " -c alarm_email=ops@example.com --require-approval never" in out
    assert " warn " not in out and " fail " not in out
    assert runner.calls == []  # --check-only deploys nothing


def test_a_blocking_finding_exits_non_zero_and_deploys_nothing(clients, host):
    runner = RecordingRunner()
    code, out = run([], clients, host, runner)  # not bootstrapped
    assert code == EXIT_FAILED and runner.calls == []
    assert "fail  bootstrap" in out and "npx cdk bootstrap aws://123456789012/us-east-1" in out
    assert "nothing was deployed" in out


def test_the_deploy_runs_the_cdk_then_prints_the_outputs_and_the_key_still_to_set(clients, host):
    ready(clients, key_set=None)  # a first deploy: no worker stack yet

    def cdk_deploy():  # what the stacks output once deployed
        create_stack(clients, "cloudia-aws-dev-state",
                     outputs={"UserPoolId": "us-east-1_Pool", "UserPoolClientId": "c"})
        create_stack(clients, "cloudia-aws-dev-api", outputs={"WebSocketUrl": "wss://ws.example/dev"})
        create_stack(clients, "cloudia-aws-dev-web", outputs={"PageUrl": "https://d111.cloudfront.net"})
        create_stack(clients, "cloudia-aws-dev-observability", resources={"MonitoringDashboard": {
            "Type": "AWS::CloudWatch::Dashboard",
            "Properties": {"DashboardName": "cloudia-dev", "DashboardBody": "{}"}}})
        deploy_worker_stack(clients)

    runner = RecordingRunner(on_run=cdk_deploy)
    code, out = run(["--require-approval", "broadening"], clients, host, runner)
    assert code == EXIT_OK, out
    [(command, env)] = runner.calls
    assert command == DEPLOY.split() + ["--require-approval", "broadening"]
    assert env["CDK_DOCKER"] == "podman"  # the container tool the preflight checked
    assert "warn  llm key" in out and "is not deployed yet" in out
    assert "page:        https://d111.cloudfront.net" in out
    assert "websocket:   wss://ws.example/dev" in out
    assert "user pool:   us-east-1_Pool" in out
    assert (f"dashboard:   https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}"
            "#dashboards/dashboard/cloudia-dev") in out
    assert "python -m cloudia.users invite NAME --email EMAIL --stage dev" in out
    after = out.split("==> deployed", 1)[1]
    assert "one more step" in after and "aws secretsmanager put-secret-value" in after


def test_a_failed_deploy_exits_non_zero_and_says_where_to_look(clients, host):
    ready(clients)
    code, out = run([], clients, host, RecordingRunner(code=1))
    assert code == EXIT_FAILED and "the deploy failed (exit status 1)" in out


def test_the_prod_stage_and_overrides_reach_both_the_checks_and_the_cdk(clients, host):
    ready(clients)
    deploy_worker_stack(clients, stage="prod", key_set=True)
    runner = RecordingRunner()
    code, out = run(["--stage", "prod", "-c", "function_reserved_concurrency=2", "-c", "alarm_email=o@example.com"],
                    clients, host, runner)
    assert code == EXIT_OK, out
    assert "5 functions x 2 = 10 concurrent executions" in out
    [(command, _)] = runner.calls
    assert command[:8] == ["npx", "cdk", "deploy", "--all", "-c", "target=aws", "-c", "stage=prod"]
    assert "function_reserved_concurrency=2" in command


def test_a_bad_setting_is_refused_before_anything_is_asked(clients, host):
    code, out = run(["-c", "function_reserved_concurrency=-1"], clients, host)
    assert code == EXIT_BAD_INPUT and "function_reserved_concurrency must be 0" in out
    code, out = run(["-c", "stage=prod"], clients, host)
    assert code == EXIT_BAD_INPUT and "--stage" in out
