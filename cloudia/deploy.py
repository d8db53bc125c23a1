"""`python -m cloudia.deploy` (`make deploy`): the guided deploy of the `aws` target.

    python -m cloudia.deploy [--stage dev|prod] [--check-only] [--require-approval never|broadening|any-change]
                             [--profile NAME] [-c KEY=VALUE ...]

First a preflight, each finding `ok`, `warn` or `fail` with what to do about it:

  credentials      `sts get-caller-identity`: the account and region the deploy goes to
  cdk cli          the pinned CDK CLI in node_modules (`make deps`)
  bootstrap        the `CDKToolkit` stack and `/cdk-bootstrap/<qualifier>/version` >= what the stacks need
  container tool   `CDK_DOCKER` (docker, podman or finch) or `docker`, and that it can build (`<tool> info`);
                   the worker image is arm64: on another machine an arm64 emulator (qemu binfmt) is needed
  lambda concurrency  what `function_reserved_concurrency` reserves against `lambda get-account-settings`
  fargate vcpu     `worker_max_tasks` x `worker_cpu` against the account's Fargate On-Demand vCPU quota
  llm key          whether the worker stack's LLM key secret still holds its generated placeholder
  alarm email      whether anyone receives the alarms and budget notices

Then, unless a finding is `fail` or `--check-only` is given, `npx cdk deploy --all -c target=aws
-c stage=STAGE --require-approval never` (its own progress on the terminal) and the stacks' outputs read
back from CloudFormation: the page URL, the WebSocket URL, the user pool, the dashboard, and the command
that sets the LLM key when it still holds the placeholder.

The container tool is the CDK's: `CDK_DOCKER=podman make deploy` builds the worker image with podman.
Credentials and region are boto3's and the CDK CLI's usual ones (AWS_PROFILE or --profile, AWS_REGION).
`-c KEY=VALUE` overrides a `cdk.json` setting for the checks and the deploy alike.

Exit codes: 0 deployed (or, with --check-only, nothing blocks); 1 a blocking finding, or the deploy
failed; 2 bad input (an unknown or invalid setting).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import boto3
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectionClosedError, ConnectTimeoutError,
                                 EndpointConnectionError, NoCredentialsError, NoRegionError, ReadTimeoutError)

from cloudia.routes import HANDLERS

ROOT = Path(__file__).resolve().parents[1]
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"

# What the synthesized stacks need: their `CheckBootstrapVersion` rule refuses versions 1-5 and the
# assembly's `requiresBootstrapStackVersion` is 6 (tests/deploy checks this against a synthesized app).
REQUIRED_BOOTSTRAP_VERSION = 6
DEFAULT_QUALIFIER = "hnb659fds"
TOOLKIT_STACK = "CDKToolkit"
# Lambda keeps this many executions unreserved (fewer when the account's quota itself is lower: a
# new account's 10 leaves nothing to reserve).
LAMBDA_MIN_UNRESERVED = 100
LAMBDA_CONCURRENCY_QUOTA = "L-B99A9384"  # Concurrent executions (service code lambda)
FARGATE_VCPU_QUOTA = "L-3032A538"  # Fargate On-Demand vCPU resource count (service code fargate)
# The worker service's rolling deployment may run this many times its desired count (max healthy 200 %).
FARGATE_DEPLOY_FACTOR = 2
CONTAINER_TOOLS = ("docker", "podman", "finch")
TOOL_TIMEOUT_S = 30
LLM_KEY_PATTERN = re.compile(r"Llm(Fallback)?ApiKey")


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | warn | fail | skip
    message: str
    action: str = ""  # what to do about it (empty when nothing)

    @property
    def blocking(self) -> bool:
        return self.status == FAIL


@dataclass(frozen=True)
class Identity:
    account: str
    region: str
    arn: str


class Clients:
    """boto3 clients of one session (the usual credentials and region, or --profile), with short
    timeouts: a preflight should answer in seconds. `endpoint_url` points every client at an emulator."""

    def __init__(self, session: boto3.Session | None = None, *, profile: str | None = None,
                 endpoint_url: str | None = None, max_attempts: int = 3):
        # The CDK CLI's order: AWS_REGION, then AWS_DEFAULT_REGION, then the profile's region.
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        self.session = session or boto3.Session(profile_name=profile, region_name=region)
        self.endpoint_url = endpoint_url
        self._config = Config(connect_timeout=5, read_timeout=15,
                              retries={"mode": "standard", "max_attempts": max_attempts})
        self._clients: dict[str, Any] = {}

    @property
    def region(self) -> str | None:
        return self.session.region_name

    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = self.session.client(service, config=self._config,
                                                         endpoint_url=self.endpoint_url)
        return self._clients[service]


@dataclass
class Host:
    """What the preflight reads from this machine (replaced in tests)."""
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    machine: str = field(default_factory=platform.machine)
    system: str = sys.platform
    binfmt_dir: Path = Path("/proc/sys/fs/binfmt_misc")
    root: Path = ROOT

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.env.get("PATH", os.defpath))

    def run(self, command: Sequence[str], timeout_s: float = TOOL_TIMEOUT_S) -> tuple[int, str]:
        try:
            done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout_s,
                                  env=dict(self.env), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return 124, f"no answer within {timeout_s:.0f} s"
        except OSError as exc:
            return 127, str(exc)
        return done.returncode, (done.stderr or done.stdout).strip()


@dataclass(frozen=True)
class Plan:
    """What is deployed: the stage, the settings it is checked against, the context passed to the CDK."""
    stage: str
    config: Any  # stacks.config.AppConfig
    overrides: Mapping[str, str] = field(default_factory=dict)
    qualifier: str = DEFAULT_QUALIFIER
    profile: str | None = None
    require_approval: str = "never"

    def stack(self, part: str) -> str:
        return self.config.stack_name(part)


def load_plan(stage: str, overrides: Mapping[str, str] | None = None, *, profile: str | None = None,
              require_approval: str = "never", root: Path = ROOT) -> Plan:
    """The `aws` target's configuration as `cdk deploy -c target=aws -c stage=STAGE -c K=V` builds it:
    cdk.json's context, the command-line values (strings) on top. Raises ConfigError on bad settings."""
    from stacks.config import AppConfig

    context = json.loads((root / "cdk.json").read_text())["context"]
    overrides = dict(overrides or {})
    context.update(overrides)
    context.update(target="aws", stage=stage)
    qualifier = str(context.get("@aws-cdk/core:bootstrapQualifier") or DEFAULT_QUALIFIER)
    return Plan(stage=stage, config=AppConfig.from_context(context), overrides=overrides,
                qualifier=qualifier, profile=profile, require_approval=require_approval)


# --- the checks -------------------------------------------------------------------------------------

def _error_text(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = (error.get("Message") or "").strip()
        if message.startswith("<"):  # an HTML error page (something that is not the service answered)
            message = ""
        if str(code).isdigit():  # no error code, only the HTTP status
            code = f"HTTP {code}"
        return f"{code}: {message}" if message else str(code)
    return str(exc)


def _error_code(exc: Exception) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


def check_credentials(clients: Clients) -> tuple[Finding, Identity | None]:
    name = "credentials"
    configure = ("configure them: `aws configure` (access keys), or `aws configure sso` then "
                 "`aws sso login --profile NAME` and AWS_PROFILE=NAME (or --profile NAME)")
    if not clients.region:
        return Finding(name, FAIL, "no AWS region is configured",
                       "set one: `export AWS_REGION=eu-west-1` (or `aws configure set region eu-west-1`)"), None
    try:
        answer = clients.client("sts").get_caller_identity()
    except NoCredentialsError:
        return Finding(name, FAIL, "no AWS credentials were found", configure), None
    except NoRegionError:
        return Finding(name, FAIL, "no AWS region is configured", "export AWS_REGION=eu-west-1"), None
    except ClientError as exc:
        code = _error_code(exc)
        if code in ("ExpiredToken", "ExpiredTokenException", "RequestExpired"):
            action = "refresh them: `aws sso login` (SSO) or new temporary credentials"
        else:
            action = f"check the access key and secret (or the profile), or {configure}"
        return Finding(name, FAIL, f"STS refused the credentials ({_error_text(exc)})", action), None
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError) as exc:
        endpoint = clients.client("sts").meta.endpoint_url
        return Finding(name, FAIL, f"STS at {endpoint} did not answer ({exc})",
                       "check the network and its proxy (HTTPS_PROXY), and AWS_ENDPOINT_URL if it is set"), None
    except BotoCoreError as exc:  # an expired or missing SSO token, a broken profile, ...
        return Finding(name, FAIL, f"the credentials could not be loaded ({exc})",
                       f"for SSO run `aws sso login` (--profile NAME); otherwise {configure}"), None
    identity = Identity(account=answer["Account"], region=clients.region, arn=answer.get("Arn", ""))
    via = f", endpoint {clients.endpoint_url}" if clients.endpoint_url else ""
    return Finding(name, OK, f"account {identity.account}, region {identity.region}, as {identity.arn}{via}"), identity


def check_cdk_cli(host: Host) -> Finding:
    name = "cdk cli"
    package = host.root / "node_modules" / "aws-cdk" / "package.json"
    if not host.which("npx"):
        return Finding(name, FAIL, "npx (Node.js) is not on PATH", "install Node.js 22 or later, then `make deps`")
    if not package.exists():
        return Finding(name, FAIL, "the pinned CDK CLI is not installed (node_modules/aws-cdk)",
                       "run `make deps` (or `npm ci`)")
    version = json.loads(package.read_text()).get("version", "?")
    return Finding(name, OK, f"aws-cdk {version} (pinned in package.json)")


def cli_bootstrap_template_version(root: Path = ROOT) -> int | None:
    """The bootstrap version `npx cdk bootstrap` of the pinned CLI installs."""
    template = root / "node_modules" / "aws-cdk" / "lib" / "api" / "bootstrap" / "bootstrap-template.yaml"
    try:
        match = re.search(r"CdkBootstrapVersion:.*?Value:\s*'?(\d+)'?", template.read_text(), re.S)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def check_bootstrap(clients: Clients, identity: Identity, plan: Plan, *,
                    required: int = REQUIRED_BOOTSTRAP_VERSION, cli_version: int | None = None) -> Finding:
    name = "bootstrap"
    command = f"npx cdk bootstrap aws://{identity.account}/{identity.region}"
    if plan.qualifier != DEFAULT_QUALIFIER:
        command += f" --qualifier {plan.qualifier}"
    parameter = f"/cdk-bootstrap/{plan.qualifier}/version"
    where = f"account {identity.account}, region {identity.region}"
    try:
        stacks = clients.client("cloudformation").describe_stacks(StackName=TOOLKIT_STACK)["Stacks"]
        status = stacks[0]["StackStatus"] if stacks else None
    except ClientError as exc:
        if "does not exist" not in _error_text(exc):
            return Finding(name, WARN, f"could not read the {TOOLKIT_STACK} stack ({_error_text(exc)})",
                           f"make sure {where} is bootstrapped: {command}")
        status = None
    except BotoCoreError as exc:
        return Finding(name, WARN, f"could not read the {TOOLKIT_STACK} stack ({exc})", command)
    if status is not None and (status.endswith("_FAILED") or status in ("ROLLBACK_COMPLETE", "REVIEW_IN_PROGRESS")):
        return Finding(name, FAIL, f"the {TOOLKIT_STACK} stack in {where} is {status}",
                       f"delete it (`aws cloudformation delete-stack --stack-name {TOOLKIT_STACK}`), then {command}")
    if status is not None and status.endswith("_IN_PROGRESS") and not status.endswith("CLEANUP_IN_PROGRESS"):
        return Finding(name, FAIL, f"the {TOOLKIT_STACK} stack in {where} is {status}",
                       "wait until it finishes, then run the deploy again")
    try:
        value = clients.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"]
    except ClientError as exc:
        if _error_code(exc) != "ParameterNotFound":
            return Finding(name, WARN, f"could not read {parameter} ({_error_text(exc)})",
                           f"make sure {where} is bootstrapped (version {required} or later): {command}")
        value = None
    except BotoCoreError as exc:
        return Finding(name, WARN, f"could not read {parameter} ({exc})", command)
    if value is None:
        if status is None:
            return Finding(name, FAIL, f"{where} is not bootstrapped for the CDK (no {TOOLKIT_STACK} stack, "
                                       f"no {parameter})", f"bootstrap it once: {command}")
        return Finding(name, FAIL, f"the {TOOLKIT_STACK} stack exists but {parameter} does not "
                                   "(an incomplete or foreign bootstrap)", f"bootstrap again: {command}")
    try:
        version = int(value)
    except ValueError:
        return Finding(name, FAIL, f"{parameter} holds {value!r}, not a version number", f"bootstrap again: {command}")
    if version < required:
        return Finding(name, FAIL, f"bootstrap version {version} in {where}; these stacks need {required} or later",
                       f"upgrade it: {command}")
    newer = f"; `{command}` upgrades it to {cli_version}" if cli_version and version < cli_version else ""
    return Finding(name, OK, f"version {version} in {where} (needs {required} or later){newer}")


def check_container_tool(host: Host) -> list[Finding]:
    name = "container tool"
    chosen = host.env.get("CDK_DOCKER", "").strip()
    tool = chosen or "docker"
    others = [t for t in CONTAINER_TOOLS if t != tool and host.which(t)]
    hint = f" (found here: {', '.join(others)}: e.g. `CDK_DOCKER={others[0]} make deploy`)" if others else ""
    path = host.which(tool)
    if path is None:
        if chosen:
            return [Finding(name, FAIL, f"CDK_DOCKER={chosen} is not on PATH",
                            f"install {chosen}, or set CDK_DOCKER to a tool that is (docker, podman or finch){hint}")]
        return [Finding(name, FAIL, "no container tool: `docker` is not on PATH and CDK_DOCKER is not set; "
                                    "the deploy builds the worker image",
                        f"install Docker, or podman or finch and set CDK_DOCKER=podman (or finch){hint}")]
    code, output = host.run([path, "info"])
    source = f"CDK_DOCKER={chosen}" if chosen else "docker (CDK_DOCKER not set)"
    if code != 0:
        last = output.splitlines()[-1] if output else f"exit status {code}"
        return [Finding(name, FAIL, f"{source} cannot build: `{tool} info` failed: {last}",
                        f"start its engine (Docker: the daemon or Docker Desktop; finch: `finch vm start`), "
                        f"or choose another tool with CDK_DOCKER{hint}")]
    findings = [Finding(name, OK, f"{source} at {path} answers `{tool} info`")]
    findings.append(_check_arm64_builds(host, tool))
    return findings


def _check_arm64_builds(host: Host, tool: str) -> Finding:
    name = "arm64 image"
    if host.machine.lower() in ("aarch64", "arm64"):
        return Finding(name, OK, "this machine is arm64, like the worker's Fargate tasks")
    if host.system != "linux":
        return Finding(name, OK, f"the worker image is linux/arm64; {tool} on {host.system} runs it in its VM")
    entries = list(host.binfmt_dir.glob("qemu-aarch64*")) if host.binfmt_dir.is_dir() else []
    if any(_enabled(entry) for entry in entries):
        return Finding(name, OK, f"the worker image is linux/arm64: this {host.machine} machine emulates it "
                                 f"({entries[0].name} binfmt handler)")
    return Finding(name, WARN, f"the worker image is linux/arm64 (Graviton) and this {host.machine} machine "
                               "registers no arm64 emulator: its build fails with `exec format error`",
                   "install one: `sudo apt-get install -y qemu-user-static binfmt-support` (Debian, Ubuntu), "
                   "or `docker run --privileged --rm tonistiigi/binfmt --install arm64`")


def _enabled(entry: Path) -> bool:
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


def function_count() -> int:
    """The Lambda functions the api stack deploys (one per route handler)."""
    return len(HANDLERS)


def _stack_resources(clients: Clients, stack: str) -> list[dict] | None:
    """The stack's resources, or None when the stack does not exist (yet)."""
    try:
        paginator = clients.client("cloudformation").get_paginator("list_stack_resources")
        return [r for page in paginator.paginate(StackName=stack) for r in page["StackResourceSummaries"]]
    except ClientError as exc:
        if "does not exist" in _error_text(exc):
            return None
        raise


def _reserved_now(clients: Clients, plan: Plan) -> int:
    """What this stage's functions reserve today (it returns to the pool when they are updated)."""
    try:
        resources = _stack_resources(clients, plan.stack("api")) or []
    except (ClientError, BotoCoreError):
        return 0
    total = 0
    for resource in resources:
        if resource["ResourceType"] != "AWS::Lambda::Function" or not resource.get("PhysicalResourceId"):
            continue
        try:
            answer = clients.client("lambda").get_function_concurrency(FunctionName=resource["PhysicalResourceId"])
        except (ClientError, BotoCoreError):
            continue
        total += answer.get("ReservedConcurrentExecutions") or 0
    return total


def check_lambda_concurrency(clients: Clients, plan: Plan, *, functions: int | None = None) -> Finding:
    name = "lambda concurrency"
    per_function = plan.config.function_reserved_concurrency
    functions = function_count() if functions is None else functions
    need = per_function * functions
    setting = "in cdk.json settings, or -c function_reserved_concurrency=N"
    try:
        limits = clients.client("lambda").get_account_settings()["AccountLimit"]
        limit = int(limits["ConcurrentExecutions"])
        unreserved = int(limits["UnreservedConcurrentExecutions"])
    except (ClientError, BotoCoreError, KeyError) as exc:
        reason = _error_text(exc)
        if need == 0:
            return Finding(name, OK, "nothing reserved (function_reserved_concurrency 0); the account's "
                                     f"settings could not be read ({reason})")
        return Finding(name, WARN, f"the settings reserve {functions} x {per_function} = {need} concurrent "
                                   f"executions, and the account's settings could not be read ({reason})",
                       f"check that `aws lambda get-account-settings` shows UnreservedConcurrentExecutions of at "
                       f"least {need} + {LAMBDA_MIN_UNRESERVED}, or reserve less or none "
                       f"(function_reserved_concurrency 0, the default; {setting})")
    minimum = min(LAMBDA_MIN_UNRESERVED, limit)
    ours = _reserved_now(clients, plan) if need else 0
    room = max(0, unreserved + ours - minimum)
    quota = (f"aws service-quotas request-service-quota-increase --service-code lambda "
             f"--quota-code {LAMBDA_CONCURRENCY_QUOTA} --desired-value")
    if need == 0:
        if limit < LAMBDA_MIN_UNRESERVED:
            return Finding(name, WARN, f"nothing reserved; the account allows only {limit} concurrent executions "
                                       "in all (a new account's quota): enough to try, not for real traffic",
                           f"ask for more before real traffic: {quota} 1000")
        return Finding(name, OK, f"nothing reserved; the functions share the account's {limit} concurrent "
                                 f"executions ({unreserved} unreserved)")
    numbers = (f"the settings reserve {functions} functions x {per_function} = {need} concurrent executions; "
               f"the account allows {limit} in all, {unreserved} unreserved"
               + (f" (+{ours} this stage's functions reserve today)" if ours else "")
               + f", and Lambda keeps {minimum} unreserved: room for {room}")
    if need > room:
        others = limit - unreserved - ours  # what other functions in the account reserve
        desired = others + need + LAMBDA_MIN_UNRESERVED
        at_most = room // functions
        less = (f"set function_reserved_concurrency to at most {at_most}, or to 0" if at_most
                else "set function_reserved_concurrency to 0")
        return Finding(name, FAIL, numbers,
                       f"{less} (no reservation, the default; {setting}); or, to reserve {per_function} per "
                       f"function, ask for a quota of {desired}: {quota} {desired}")
    return Finding(name, OK, numbers)


def check_fargate_vcpu(clients: Clients, plan: Plan) -> Finding:
    name = "fargate vcpu"
    config = plan.config
    vcpu = config.worker_cpu / 1024
    need = config.worker_max_tasks * vcpu
    peak = need * FARGATE_DEPLOY_FACTOR
    numbers = (f"the worker scales to worker_max_tasks {config.worker_max_tasks} x {vcpu:g} vCPU = {need:g} vCPU "
               f"({peak:g} while a deployment replaces them at full scale)")
    command = (f"aws service-quotas get-service-quota --service-code fargate --quota-code {FARGATE_VCPU_QUOTA}")
    less = "or lower -c worker_max_tasks=N / worker_cpu (cdk.json settings)"
    quotas = clients.client("service-quotas")
    try:
        try:
            value = quotas.get_service_quota(ServiceCode="fargate", QuotaCode=FARGATE_VCPU_QUOTA)["Quota"]["Value"]
        except ClientError as exc:
            if _error_code(exc) != "NoSuchResourceException":
                raise
            value = quotas.get_aws_default_service_quota(
                ServiceCode="fargate", QuotaCode=FARGATE_VCPU_QUOTA)["Quota"]["Value"]
    except (ClientError, BotoCoreError, KeyError) as exc:
        reason = _error_text(exc)
        return Finding(name, WARN, f"{numbers}; the account's Fargate On-Demand vCPU quota could not be read "
                                   f"({reason})", f"check it is at least {peak:g}: {command}")
    increase = (f"aws service-quotas request-service-quota-increase --service-code fargate "
                f"--quota-code {FARGATE_VCPU_QUOTA} --desired-value {peak:g}")
    with_quota = f"{numbers}; the account's Fargate On-Demand vCPU quota is {value:g}"
    if need > value:
        return Finding(name, FAIL, with_quota + ": the tasks beyond it would never start",
                       f"ask for more: {increase}, {less}")
    if peak > value:
        return Finding(name, WARN, with_quota + ": a deployment at full scale waits for room (other "
                                                "Fargate tasks in the region count too)", f"{increase}, {less}")
    return Finding(name, OK, with_quota + " (other Fargate tasks in the region count against it too)")


@dataclass(frozen=True)
class KeySecret:
    arn: str
    logical_id: str
    placeholder: bool


def find_llm_key_secrets(clients: Clients, plan: Plan) -> list[KeySecret] | None:
    """The worker stack's LLM key secrets (`…LlmApiKey…`, `…LlmFallbackApiKey…`), or None when the stack
    is not deployed. The stack creates each with a generated value (`GenerateSecretString`), its only
    version: a secret with a single version still holds that placeholder; `put-secret-value` adds one."""
    stack = plan.stack("worker")
    resources = _stack_resources(clients, stack)
    if resources is None:
        return None
    found = {r["PhysicalResourceId"]: r["LogicalResourceId"] for r in resources
             if r["ResourceType"] == "AWS::SecretsManager::Secret" and LLM_KEY_PATTERN.search(r["LogicalResourceId"])
             and r.get("PhysicalResourceId")}
    secrets = clients.client("secretsmanager")
    if not found:
        # CloudFormation tags what it creates with its stack and logical id (an emulator may not list it).
        paginator = secrets.get_paginator("list_secrets")
        for page in paginator.paginate(Filters=[{"Key": "tag-value", "Values": [stack]}]):
            for entry in page["SecretList"]:
                tags = {t["Key"]: t["Value"] for t in entry.get("Tags", [])}
                logical = tags.get("aws:cloudformation:logical-id", "")
                if tags.get("aws:cloudformation:stack-name") == stack and LLM_KEY_PATTERN.search(logical):
                    found[entry["ARN"]] = logical
    result = []
    for arn, logical in sorted(found.items(), key=lambda item: item[1]):
        versions = secrets.describe_secret(SecretId=arn).get("VersionIdsToStages") or {}
        result.append(KeySecret(arn=arn, logical_id=logical, placeholder=len(versions) <= 1))
    return result


def _worker_service(clients: Clients, plan: Plan) -> tuple[str, str] | None:
    try:
        resources = _stack_resources(clients, plan.stack("worker")) or []
    except (ClientError, BotoCoreError):
        return None
    ids = {r["ResourceType"]: r.get("PhysicalResourceId") for r in resources}
    cluster, service = ids.get("AWS::ECS::Cluster"), ids.get("AWS::ECS::Service")
    return (cluster, service) if cluster and service else None


def put_secret_command(secret: KeySecret, plan: Plan, region: str) -> str:
    profile = f" --profile {shlex.quote(plan.profile)}" if plan.profile else ""
    return (f"aws secretsmanager put-secret-value --region {region}{profile} "
            f"--secret-id {shlex.quote(secret.arn)} --secret-string \"$LLM_API_KEY\"")


def check_llm_key(clients: Clients, plan: Plan, identity: Identity) -> list[Finding]:
    name = "llm key"
    config = plan.config
    try:
        secrets = find_llm_key_secrets(clients, plan)
    except (ClientError, BotoCoreError) as exc:
        return [Finding(name, WARN, f"could not read the worker stack's LLM key secret ({_error_text(exc)})",
                        "check it in the Secrets Manager console after the deploy")]
    if secrets is None:
        return [Finding(name, WARN, f"{plan.stack('worker')} is not deployed yet: it creates the LLM key secret "
                                    f"({config.llm_provider}) holding a generated placeholder, and the worker's "
                                    "calls fail until it holds the provider's key",
                        "set it after the deploy (the command is printed then)")]
    if not secrets:
        return [Finding(name, WARN, f"no LLM key secret found in {plan.stack('worker')}",
                        "look for the `cloud-ia LLM provider API key` secret in the Secrets Manager console")]
    findings = []
    service = _worker_service(clients, plan)
    restart = (f"; then restart the worker so it reads it: aws ecs update-service --region {identity.region} "
               f"--cluster {service[0]} --service {service[1]} --force-new-deployment") if service else ""
    for secret in secrets:
        fallback = "Fallback" in secret.logical_id
        provider = config.llm_fallback_provider if fallback else config.llm_provider
        label = f"the {'fallback ' if fallback else ''}LLM key ({provider or 'provider'}, {secret.arn})"
        if secret.placeholder:
            findings.append(Finding(
                name, WARN, f"{label} still holds the placeholder the stack generated: the worker cannot call "
                            "the LLM",
                f"put the provider's key in LLM_API_KEY (`read -rs LLM_API_KEY; export LLM_API_KEY`, out of the "
                f"shell history), then: {put_secret_command(secret, plan, identity.region)}{restart}"))
        else:
            findings.append(Finding(name, OK, f"{label} has been set"))
    return findings


def check_alarm_email(plan: Plan) -> Finding:
    if plan.config.alarm_email:
        return Finding("alarm email", OK, f"alarms and budget notices go to {plan.config.alarm_email} "
                                          "(confirm the subscription email SNS sends)")
    return Finding("alarm email", WARN, "alarm_email is empty: alarms and budget notices reach no one",
                   "set it: -c alarm_email=you@example.com (or cdk.json settings), then confirm SNS's email")


def preflight(plan: Plan, clients: Clients, host: Host, *, functions: int | None = None) -> list[Finding]:
    findings: list[Finding] = []
    credentials, identity = check_credentials(clients)
    findings.append(credentials)
    findings.append(check_cdk_cli(host))
    findings.extend(check_container_tool(host))
    if identity is None:
        for check in ("bootstrap", "lambda concurrency", "fargate vcpu", "llm key"):
            findings.append(Finding(check, SKIP, "not checked: it needs working credentials"))
    else:
        findings.append(check_bootstrap(clients, identity, plan, cli_version=cli_bootstrap_template_version(host.root)))
        findings.append(check_lambda_concurrency(clients, plan, functions=functions))
        findings.append(check_fargate_vcpu(clients, plan))
        findings.extend(check_llm_key(clients, plan, identity))
    findings.append(check_alarm_email(plan))
    return findings


def format_findings(findings: Iterable[Finding]) -> str:
    findings = list(findings)
    width = max((len(f.check) for f in findings), default=0)
    lines = []
    for f in findings:
        lines.append(f"  {f.status:<4}  {f.check:<{width}}  {f.message}")
        if f.action:
            lines.append(f"  {'':<4}  {'':<{width}}  -> {f.action}")
    return "\n".join(lines)


# --- the deploy -------------------------------------------------------------------------------------

def deploy_command(plan: Plan) -> list[str]:
    command = ["npx", "cdk", "deploy", "--all", "-c", "target=aws", "-c", f"stage={plan.stage}"]
    for key, value in plan.overrides.items():
        command += ["-c", f"{key}={value}"]
    command += ["--require-approval", plan.require_approval]
    if plan.profile:
        command += ["--profile", plan.profile]
    return command


Runner = Callable[[Sequence[str], Mapping[str, str], Path], int]


def run_streaming(command: Sequence[str], env: Mapping[str, str], cwd: Path) -> int:
    """Runs the CDK CLI on this terminal: its own progress (assets built and published, each stack's
    resources as CloudFormation creates them) and, with approval asked, its prompt."""
    try:
        return subprocess.run(list(command), env=dict(env), cwd=cwd).returncode
    except OSError as exc:
        print(f"could not run {command[0]}: {exc}", file=sys.stderr)
        return 127


def stack_outputs(clients: Clients, stack: str) -> dict[str, str] | None:
    try:
        stacks = clients.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except ClientError:
        return None
    return {o["OutputKey"]: o["OutputValue"] for o in (stacks[0].get("Outputs") or [])} if stacks else None


def dashboard_url(clients: Clients, plan: Plan, region: str) -> str | None:
    """The observability stack's output that names a dashboard, else its dashboard's console URL."""
    outputs = stack_outputs(clients, plan.stack("observability")) or {}
    for key, value in outputs.items():
        if "dashboard" in key.lower():
            return value
    try:
        resources = _stack_resources(clients, plan.stack("observability")) or []
    except (ClientError, BotoCoreError):
        return None
    for resource in resources:
        if resource["ResourceType"] == "AWS::CloudWatch::Dashboard" and resource.get("PhysicalResourceId"):
            return (f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
                    f"#dashboards/dashboard/{resource['PhysicalResourceId']}")
    return None


def report_outputs(clients: Clients, plan: Plan, identity: Identity) -> list[str]:
    web = stack_outputs(clients, plan.stack("web")) or {}
    api = stack_outputs(clients, plan.stack("api")) or {}
    state = stack_outputs(clients, plan.stack("state")) or {}
    lines = [
        f"  page:        {web.get('PageUrl', '(no PageUrl output in ' + plan.stack('web') + ')')}",
        f"  websocket:   {api.get('WebSocketUrl', '(no WebSocketUrl output in ' + plan.stack('api') + ')')}",
        f"  user pool:   {state.get('UserPoolId', '(no UserPoolId output in ' + plan.stack('state') + ')')}",
        f"  dashboard:   {dashboard_url(clients, plan, identity.region) or '(none found)'}",
    ]
    if state.get("UserPoolId"):
        lines.append(f"  invite a user: python -m cloudia.users invite NAME --email EMAIL --stage {plan.stage}")
    return lines


def main(argv: Sequence[str] | None = None, *, clients: Clients | None = None, host: Host | None = None,
         runner: Runner = run_streaming, functions: int | None = None, out=None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    try:
        overrides = dict(_context_pair(raw) for raw in args.context)
        plan = load_plan(args.stage, overrides, profile=args.profile, require_approval=args.require_approval,
                         root=(host.root if host else ROOT))
    except ValueError as exc:  # ConfigError is a ValueError
        say(f"bad setting: {exc}")
        return EXIT_BAD_INPUT
    host = host or Host()
    if clients is None:
        try:
            clients = Clients(profile=args.profile)
        except BotoCoreError as exc:  # e.g. a profile that does not exist
            say(f"bad profile: {exc}")
            return EXIT_BAD_INPUT

    say(f"==> preflight: the aws target, stage {plan.stage}")
    findings = preflight(plan, clients, host, functions=functions)
    say(format_findings(findings))
    command = deploy_command(plan)
    blocking = [f for f in findings if f.blocking]
    warnings = [f for f in findings if f.status == WARN]
    summary = f"{len(blocking)} blocking, {len(warnings)} warning{'s' if len(warnings) != 1 else ''}"
    if blocking:
        say(f"==> {summary}: fix the `fail` findings above, then run this again (nothing was deployed)")
        return EXIT_FAILED
    if args.check_only:
        say(f"==> {summary}: ready; the deploy would run: {shlex.join(command)}")
        return EXIT_OK

    say(f"==> {summary}; deploying: {shlex.join(command)}")
    env = {**host.env, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "CDK_DISABLE_VERSION_CHECK": "1"}
    code = runner(command, env, host.root)
    if code != 0:
        say(f"==> the deploy failed (exit status {code}): the CDK's messages above say which resource and why; "
            "CloudFormation rolled that stack back. `python -m cloudia.deploy --check-only` checks again.")
        return EXIT_FAILED
    _, identity = check_credentials(clients)
    if identity is None:
        say("==> deployed (the outputs could not be read back)")
        return EXIT_OK
    say("==> deployed")
    for line in report_outputs(clients, plan, identity):
        say(line)
    key_findings = [f for f in check_llm_key(clients, plan, identity) if f.status != OK]
    if key_findings:
        say("==> one more step")
        say(format_findings(key_findings))
    return EXIT_OK


def _context_pair(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"-c takes KEY=VALUE, got {raw!r}")
    if key.strip() in ("target", "stage"):
        raise ValueError("the target is always aws here; choose the stage with --stage (or make deploy STAGE=prod)")
    return key.strip(), value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cloudia.deploy",
        description="Check the account, this machine and the settings, then deploy the aws target "
                    "(npx cdk deploy --all -c target=aws -c stage=STAGE) and print its URLs.",
        epilog="The container tool that builds the worker image is CDK_DOCKER's (docker, podman or finch); "
               "credentials and region are boto3's and the CDK's usual ones (AWS_PROFILE, AWS_REGION).")
    parser.add_argument("--stage", choices=("dev", "prod"), default="dev", help="(default: %(default)s)")
    parser.add_argument("--check-only", action="store_true",
                        help="run the preflight only; exit 1 when a finding blocks the deploy")
    parser.add_argument("--require-approval", choices=("never", "broadening", "any-change"), default="never",
                        help="the CDK's approval: never ask (default), ask before security-related changes "
                             "(broadening) or before any change")
    parser.add_argument("--profile", help="the AWS profile (default: AWS_PROFILE or the default one)")
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                        help="override a cdk.json setting, as `cdk -c` does (repeatable)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
