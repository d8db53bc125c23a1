"""Each preflight check of `python -m cloudia.deploy` against the emulator: what it finds and what it
tells the user to do."""
from __future__ import annotations

import boto3
import botocore.credentials
import botocore.session
import pytest
from botocore.exceptions import ClientError

from cloudia.deploy import (FAIL, OK, SKIP, WARN, Clients, Host, Identity, check_bootstrap,
                            check_container_tool, check_credentials, check_fargate_vcpu,
                            check_lambda_concurrency, check_llm_key, function_count, preflight)
from tests.deploy.conftest import (ACCOUNT, REGION, bootstrap, deploy_worker_stack, fake_tool, plan,
                                   stub_fargate_quota, stub_lambda_account)
from tests.support.servers import free_port

IDENTITY = Identity(account=ACCOUNT, region=REGION, arn=f"arn:aws:sts::{ACCOUNT}:user/moto")


# --- credentials ----------------------------------------------------------------------------------

def test_credentials_name_the_account_and_region_the_deploy_goes_to(clients):
    finding, identity = check_credentials(clients)
    assert finding.status == OK and identity == IDENTITY
    assert f"account {ACCOUNT}, region {REGION}" in finding.message


def test_no_credentials_is_a_clear_fail(emulator):
    # A session whose credential chain finds nothing (no keys, no profile, no instance role).
    core = botocore.session.get_session()
    core.register_component("credential_provider", botocore.credentials.CredentialResolver(providers=[]))
    clients = Clients(boto3.Session(botocore_session=core, region_name=REGION), endpoint_url=emulator.endpoint)
    finding, identity = check_credentials(clients)
    assert identity is None and finding.status == FAIL
    assert finding.message == "no AWS credentials were found"
    assert "aws configure" in finding.action and "aws sso login" in finding.action


def test_no_region_is_a_clear_fail(emulator, tmp_path, monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))  # not this machine's own
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    clients = Clients(session, endpoint_url=emulator.endpoint)
    assert clients.region is None
    finding, _ = check_credentials(clients)
    assert finding.status == FAIL and "AWS_REGION" in finding.action


def test_an_unreachable_endpoint_is_a_clear_fail():
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    finding, identity = check_credentials(Clients(session, endpoint_url=endpoint, max_attempts=1))
    assert identity is None and finding.status == FAIL
    assert finding.message.startswith(f"STS at {endpoint} did not answer")
    assert "HTTPS_PROXY" in finding.action


def test_without_credentials_the_account_checks_are_skipped_not_failed(emulator, host):
    core = botocore.session.get_session()
    core.register_component("credential_provider", botocore.credentials.CredentialResolver(providers=[]))
    clients = Clients(boto3.Session(botocore_session=core, region_name=REGION), endpoint_url=emulator.endpoint)
    findings = {f.check: f for f in preflight(plan(), clients, host, functions=5)}
    assert findings["credentials"].status == FAIL
    for check in ("bootstrap", "lambda concurrency", "fargate vcpu", "llm key"):
        assert findings[check].status == SKIP


# --- bootstrap ------------------------------------------------------------------------------------

def test_not_bootstrapped_fails_with_the_bootstrap_command(clients):
    finding = check_bootstrap(clients, IDENTITY, plan())
    assert finding.status == FAIL
    assert "is not bootstrapped" in finding.message
    assert f"npx cdk bootstrap aws://{ACCOUNT}/{REGION}" in finding.action


def test_an_old_bootstrap_fails_with_the_upgrade(clients):
    bootstrap(clients, version=4)
    finding = check_bootstrap(clients, IDENTITY, plan())
    assert finding.status == FAIL
    assert finding.message == (f"bootstrap version 4 in account {ACCOUNT}, region {REGION}; "
                               "these stacks need 6 or later")
    assert finding.action == f"upgrade it: npx cdk bootstrap aws://{ACCOUNT}/{REGION}"


def test_a_current_bootstrap_is_ok_and_an_older_one_says_what_the_cli_would_install(clients):
    bootstrap(clients, version=20)
    finding = check_bootstrap(clients, IDENTITY, plan(), cli_version=33)
    assert finding.status == OK and finding.message.startswith("version 20 ")
    assert "upgrades it to 33" in finding.message


def test_a_toolkit_stack_without_its_version_parameter_fails(clients):
    from tests.deploy.conftest import create_stack

    create_stack(clients, "CDKToolkit")
    finding = check_bootstrap(clients, IDENTITY, plan())
    assert finding.status == FAIL and "does not" in finding.message
    assert f"npx cdk bootstrap aws://{ACCOUNT}/{REGION}" in finding.action


def test_a_custom_qualifier_is_read_from_the_context_and_named_in_the_command(clients):
    bootstrap(clients, version=33)  # the default qualifier only
    custom = plan(**{"@aws-cdk/core:bootstrapQualifier": "cloudia1"})
    finding = check_bootstrap(clients, IDENTITY, custom)
    assert finding.status == FAIL and "/cdk-bootstrap/cloudia1/version" in finding.message
    assert finding.action.endswith("--qualifier cloudia1")


# --- container tool -------------------------------------------------------------------------------

def test_a_missing_container_tool_fails_naming_cdk_docker(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    [finding] = check_container_tool(Host(env={"PATH": str(empty)}))
    assert finding.status == FAIL
    assert "`docker` is not on PATH and CDK_DOCKER is not set" in finding.message
    assert "CDK_DOCKER=podman" in finding.action


def test_a_cdk_docker_that_is_not_installed_fails_and_points_at_the_one_that_is(tmp_path):
    fake_tool(tmp_path / "bin", "podman")
    [finding] = check_container_tool(Host(env={"PATH": str(tmp_path / "bin"), "CDK_DOCKER": "finch"}))
    assert finding.status == FAIL and finding.message == "CDK_DOCKER=finch is not on PATH"
    assert "CDK_DOCKER=podman make deploy" in finding.action


def test_a_container_tool_that_cannot_build_fails_with_its_own_words(tmp_path):
    fake_tool(tmp_path / "bin", "docker",
              'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1')
    [finding] = check_container_tool(Host(env={"PATH": str(tmp_path / "bin")}))
    assert finding.status == FAIL
    assert "`docker info` failed: Cannot connect to the Docker daemon" in finding.message
    assert "CDK_DOCKER" in finding.action


def test_an_x86_machine_without_an_arm64_emulator_is_warned(tmp_path):
    fake_tool(tmp_path / "bin", "docker")
    (tmp_path / "binfmt_misc").mkdir()
    tool, arm64 = check_container_tool(Host(env={"PATH": str(tmp_path / "bin")}, machine="x86_64", system="linux",
                                            binfmt_dir=tmp_path / "binfmt_misc"))
    assert tool.status == OK and "docker (CDK_DOCKER not set)" in tool.message
    assert arm64.status == WARN and "exec format error" in arm64.message
    assert "qemu-user-static binfmt-support" in arm64.action
    (tmp_path / "binfmt_misc" / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64\n")
    _, arm64 = check_container_tool(Host(env={"PATH": str(tmp_path / "bin")}, machine="x86_64", system="linux",
                                         binfmt_dir=tmp_path / "binfmt_misc"))
    assert arm64.status == OK and "qemu-aarch64" in arm64.message


# --- Lambda concurrency ---------------------------------------------------------------------------

def test_moto_has_no_lambda_account_settings(clients):
    # What the emulator answers, and why the tests below stub this one call.
    with pytest.raises(ClientError) as raised:
        clients.client("lambda").get_account_settings()
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_unreadable_account_settings_are_a_warning_with_what_to_check(clients):
    finding = check_lambda_concurrency(clients, plan(function_reserved_concurrency=10), functions=5)
    assert finding.status == WARN and "could not be read (HTTP 404)" in finding.message
    assert "aws lambda get-account-settings" in finding.action
    assert check_lambda_concurrency(clients, plan(), functions=5).status == OK  # nothing reserved, nothing needed


def test_the_default_reserves_nothing_and_deploys_on_a_new_account(clients):
    stub_lambda_account(clients, limit=10, unreserved=10)
    finding = check_lambda_concurrency(clients, plan(), functions=5)
    assert finding.status == WARN  # deploys; only the quota is small for real traffic
    assert "nothing reserved" in finding.message and "only 10 concurrent executions" in finding.message
    assert "--quota-code L-B99A9384" in finding.action


def test_a_reservation_beyond_the_unreserved_room_fails_with_the_numbers(clients):
    stub_lambda_account(clients, limit=10, unreserved=10)  # a new account
    finding = check_lambda_concurrency(clients, plan(function_reserved_concurrency=10), functions=5)
    assert finding.status == FAIL
    assert finding.message == ("the settings reserve 5 functions x 10 = 50 concurrent executions; the account "
                               "allows 10 in all, 10 unreserved, and Lambda keeps 10 unreserved: room for 0")
    assert finding.action.startswith("set function_reserved_concurrency to 0 (no reservation, the default; "
                                     "in cdk.json settings, or -c function_reserved_concurrency=N)")
    assert "to reserve 10 per function, ask for a quota of 150" in finding.action
    assert "--quota-code L-B99A9384 --desired-value 150" in finding.action


def test_a_partial_room_says_how_much_fits(clients):
    stub_lambda_account(clients, limit=1000, unreserved=120)  # others reserve 880
    finding = check_lambda_concurrency(clients, plan(function_reserved_concurrency=10), functions=5)
    assert finding.status == FAIL and finding.message.endswith("Lambda keeps 100 unreserved: room for 20")
    assert finding.action.startswith("set function_reserved_concurrency to at most 4, or to 0")
    assert "--desired-value 1030" in finding.action


def test_a_reservation_within_the_room_is_ok(clients):
    stub_lambda_account(clients, limit=1000, unreserved=900)  # another function reserves 100
    finding = check_lambda_concurrency(clients, plan(function_reserved_concurrency=10), functions=5)
    assert finding.status == OK and "room for 800" in finding.message


def test_the_api_stack_has_five_functions():
    assert function_count() == 5


# --- Fargate vCPU ---------------------------------------------------------------------------------

def test_moto_cannot_read_the_fargate_quota_so_the_check_warns_with_the_command(clients):
    finding = check_fargate_vcpu(clients, plan())
    assert finding.status == WARN
    assert "worker_max_tasks 4 x 0.5 vCPU = 2 vCPU" in finding.message
    assert "aws service-quotas get-service-quota --service-code fargate --quota-code L-3032A538" in finding.action


def test_more_worker_vcpu_than_the_quota_fails(clients):
    stub_fargate_quota(clients, vcpu=1.0)
    finding = check_fargate_vcpu(clients, plan())
    assert finding.status == FAIL and "quota is 1" in finding.message
    assert "request-service-quota-increase --service-code fargate" in finding.action
    assert "worker_max_tasks" in finding.action


def test_a_quota_that_fits_the_worker_but_not_a_deployment_at_full_scale_warns(clients):
    stub_fargate_quota(clients, vcpu=3.0)
    assert check_fargate_vcpu(clients, plan()).status == WARN


# --- the LLM key ----------------------------------------------------------------------------------

def test_before_the_first_deploy_the_key_is_a_reminder(clients):
    [finding] = check_llm_key(clients, plan(), IDENTITY)
    assert finding.status == WARN and "is not deployed yet" in finding.message


def test_the_placeholder_secret_warns_with_the_command_that_sets_it(clients):
    arn = deploy_worker_stack(clients)
    [finding] = check_llm_key(clients, plan(), IDENTITY)
    assert finding.status == WARN and "still holds the placeholder" in finding.message
    assert (f"aws secretsmanager put-secret-value --region {REGION} --secret-id {arn} "
            '--secret-string "$LLM_API_KEY"') in finding.action
    assert "aws ecs update-service" in finding.action and "--force-new-deployment" in finding.action


def test_a_key_that_was_set_is_ok(clients):
    deploy_worker_stack(clients, key_set=True)
    [finding] = check_llm_key(clients, plan(), IDENTITY)
    assert finding.status == OK and "has been set" in finding.message


# --- all of it ------------------------------------------------------------------------------------

def test_all_good_is_ok_throughout(clients, host):
    bootstrap(clients)
    deploy_worker_stack(clients, key_set=True)
    stub_lambda_account(clients, limit=1000, unreserved=1000)
    stub_fargate_quota(clients, vcpu=16.0)
    findings = preflight(plan(alarm_email="ops@example.com"), clients, host, functions=5)
    assert [(f.check, f.status) for f in findings if f.status != OK] == []
    assert {f.check for f in findings} == {"credentials", "cdk cli", "container tool", "arm64 image",
                                           "bootstrap", "lambda concurrency", "fargate vcpu", "llm key",
                                           "alarm email"}
