"""The guided deploy's checks against an emulator of their own: a moto server on a free port (STS,
CloudFormation, SSM, Secrets Manager), reset before each test, and a stand-in for this machine (its
PATH, container tool and architecture) so no test depends on what is installed here."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from cloudia.deploy import Clients, Host, load_plan
from tests.support.servers import MotoServer

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT, REGION = "123456789012", "us-east-1"  # moto's account; the region the clients use


@pytest.fixture(scope="module")
def emulator():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def clients(emulator) -> Clients:
    emulator.reset()
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    return Clients(session, endpoint_url=emulator.endpoint, max_attempts=1)


def fake_tool(directory: Path, name: str, script: str = "exit 0") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def host(tmp_path) -> Host:
    """This machine as the checks see it: `npx` and a podman that answers `info`, on an arm64 host."""
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "npx")
    fake_tool(bin_dir, "podman")
    return Host(env={"PATH": str(bin_dir), "CDK_DOCKER": "podman"}, machine="aarch64", system="linux",
                binfmt_dir=tmp_path / "binfmt_misc", root=ROOT)


def plan(stage: str = "dev", **overrides):
    return load_plan(stage, {k: str(v) for k, v in overrides.items()})


def create_stack(clients: Clients, name: str, resources: dict | None = None, outputs: dict | None = None) -> None:
    # moto needs a resource it knows in every stack: a parameter named after the stack stands in.
    template = {"Resources": resources or {
        "Marker": {"Type": "AWS::SSM::Parameter",
                   "Properties": {"Name": f"/test/{name}", "Type": "String", "Value": name}}}}
    if outputs:
        template["Outputs"] = {key: {"Value": value} for key, value in outputs.items()}
    clients.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))


def bootstrap(clients: Clients, version: int = 33, qualifier: str = "hnb659fds") -> None:
    """What `cdk bootstrap` leaves that the check reads: the CDKToolkit stack and its version parameter."""
    create_stack(clients, "CDKToolkit", resources={"CdkBootstrapVersion": {
        "Type": "AWS::SSM::Parameter",
        "Properties": {"Name": f"/cdk-bootstrap/{qualifier}/version", "Type": "String", "Value": str(version)}}},
        outputs={"BootstrapVersion": str(version)})


def deploy_worker_stack(clients: Clients, stage: str = "dev", key_set: bool = False) -> str:
    """The worker stack with its cluster and service, and its LLM key secret as CloudFormation creates it:
    a generated value, tagged with the stack and logical id. moto's CloudFormation skips
    AWS::SecretsManager::Secret resources, so the secret is created beside the stack with those tags."""
    stack = f"cloudia-aws-{stage}-worker"
    create_stack(clients, stack, resources={
        "WorkerCluster": {"Type": "AWS::ECS::Cluster", "Properties": {}},
        "WorkerTask": {"Type": "AWS::ECS::TaskDefinition", "Properties": {
            "Family": "worker", "ContainerDefinitions": [{"Name": "Worker", "Image": "worker", "Memory": 1024}]}},
        "WorkerService": {"Type": "AWS::ECS::Service", "Properties": {
            "Cluster": {"Ref": "WorkerCluster"}, "TaskDefinition": {"Ref": "WorkerTask"}, "DesiredCount": 1}},
    })
    secrets = clients.client("secretsmanager")
    arn = secrets.create_secret(
        Name=f"WorkerLlmApiKey59837775-{stage}",
        Description="cloud-ia LLM provider API key (set the value after deploy)",
        SecretString=os.urandom(16).hex(),
        Tags=[{"Key": "aws:cloudformation:stack-name", "Value": stack},
              {"Key": "aws:cloudformation:logical-id", "Value": "WorkerLlmApiKey59837775"}])["ARN"]
    if key_set:
        secrets.put_secret_value(SecretId=arn, SecretString="sk-test-key")
    return arn


def stub_lambda_account(clients: Clients, limit: int, unreserved: int) -> Stubber:
    # moto's server has no GetAccountSettings (it answers 404, see test_moto_has_no_lambda_account_settings):
    # this one call of the Lambda client is stubbed with the numbers the test needs.
    stubber = Stubber(clients.client("lambda"))
    stubber.add_response("get_account_settings", {"AccountLimit": {
        "ConcurrentExecutions": limit, "UnreservedConcurrentExecutions": unreserved}, "AccountUsage": {}})
    stubber.activate()
    return stubber


def stub_fargate_quota(clients: Clients, vcpu: float) -> Stubber:
    # moto's Service Quotas knows only the vpc service: the Fargate vCPU quota call is stubbed.
    stubber = Stubber(clients.client("service-quotas"))
    stubber.add_response("get_service_quota", {"Quota": {
        "ServiceCode": "fargate", "QuotaCode": "L-3032A538", "QuotaName": "Fargate On-Demand vCPU resource count",
        "Value": vcpu}}, {"ServiceCode": "fargate", "QuotaCode": "L-3032A538"})
    stubber.activate()
    return stubber
