"""Find what the `local` target deployed, from the emulator itself: never from hard-coded names.

The deployed functions carry the whole runtime configuration in their environment (queue URLs,
table names, Redis, resilience settings), set by the stacks; the worker and the local gateway run
with that same environment.
"""
from __future__ import annotations

import boto3

from cloudia.routes import function_id
from local_runtime.emulator import EMULATOR_REGION
from local_runtime.identity import ensure_user_pool

API_STACK = "cloudia-local-{stage}-api"
# The function whose environment is read (all functions share one environment).
REFERENCE_FUNCTION_LOGICAL_PREFIX = f"Functions{function_id('send_message')}"


class NotDeployed(LookupError):
    pass


def _client(service: str, endpoint: str | None):
    return boto3.client(service, endpoint_url=endpoint, region_name=EMULATOR_REGION,
                        aws_access_key_id="test", aws_secret_access_key="test")


def deployed_functions(endpoint: str | None, stage: str = "dev") -> dict[str, str]:
    """Logical ID -> physical function name, for every Lambda function of the API stack."""
    cloudformation = _client("cloudformation", endpoint)
    try:
        pages = cloudformation.get_paginator("list_stack_resources").paginate(
            StackName=API_STACK.format(stage=stage))
        resources = [r for page in pages for r in page["StackResourceSummaries"]]
    except cloudformation.exceptions.ClientError as exc:
        raise NotDeployed(f"stack {API_STACK.format(stage=stage)} is not deployed: {exc}") from exc
    return {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources
            if r["ResourceType"] == "AWS::Lambda::Function" and r.get("PhysicalResourceId")}


def runtime_environment(endpoint: str, stage: str = "dev") -> dict[str, str]:
    """The environment the deployed functions run with, and the local user pool's (created on the
    first call: moto's CloudFormation creates no Cognito resources, see local_runtime/identity.py)."""
    functions = deployed_functions(endpoint, stage)
    name = next((n for logical, n in functions.items()
                 if logical.startswith(REFERENCE_FUNCTION_LOGICAL_PREFIX)), None)
    if name is None:
        raise NotDeployed(f"no sendMessage function in {API_STACK.format(stage=stage)}: "
                          "deploy with `make deploy-local`")
    config = _client("lambda", endpoint).get_function_configuration(FunctionName=name)
    return {**config.get("Environment", {}).get("Variables", {}), **ensure_user_pool(endpoint, stage).env()}
