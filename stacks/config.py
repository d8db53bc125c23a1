"""One typed, frozen configuration, built once in `app.py` from `cdk.json` context and passed down.

No stack or construct reads context or the environment itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from cloudia.llm.timing import call_deadline_s
from cloudia.settings import Resilience, resilience_from

TARGETS = ("aws", "local")
# One Python for production, owned here: the Lambda runtime and the Lambda bundling's target
# (stacks/components/lambda_code.py) and the worker image's base (WORKER_BASE_IMAGE, which the CDK
# passes as the Dockerfile's BASE_IMAGE build argument) are this minor version; tests/image builds
# its stand-in base on the Debian release that ships it. The code stays compatible with the Python
# the tests run (3.11). tests/infra/test_python_version.py fails when any of them disagrees.
PRODUCTION_PYTHON = "3.13"
# The official python:3.13-slim-trixie by its multi-platform index digest (linux/amd64 and linux/arm64
# among others): Python 3.13.14 on Debian 13, built 5 Aug 2026, as docker-library/repo-info records it
# (repos/python/remote/3.13-slim-trixie.md). The Dockerfile's default ARG BASE_IMAGE is the same, for
# a plain `docker build`. Bump both deliberately, with the digest from
# `docker buildx imagetools inspect python:3.13-slim-trixie`.
WORKER_BASE_IMAGE = ("python:3.13-slim-trixie"
                     "@sha256:9662417aace5ae7b8e2609cce472b72a8958e134ba372808abe9cc1a0c0125e6")
# Fargate's longest stop timeout (between SIGTERM and SIGKILL).
FARGATE_MAX_STOP_TIMEOUT_S = 120
# ECS's stop timeout is this much above the worker's drain, for the hand-back and the exit.
STOP_TIMEOUT_MARGIN_S = 10
# After its LLM call a job stores the answer, pushes it and deletes its message: a few round trips,
# each bounded (DynamoDB 1 s, Redis 500 ms, SQS 2 s).
JOB_WRITES_MARGIN_S = 5
STAGES = ("dev", "prod")
# What Cognito accepts for an app client's ID/access token lifetime (minutes) and refresh token (days).
COGNITO_TOKEN_MINUTES = (5, 1440)
COGNITO_REFRESH_DAYS = (1, 3650)


class ConfigError(ValueError):
    """A context value that cannot build a working deployment; the message says which and why."""


@dataclass(frozen=True)
class AppConfig:
    target: str
    stage: str
    resilience: Resilience = field(default_factory=Resilience)
    # FinOps: a monthly AWS Budgets budget with notifications at 80 % (forecast) and 100 % (actual).
    monthly_budget_usd: int = 50
    alarm_email: str = ""
    # Reserved concurrency per function (0 = none, the default): a hard cost cap and a bulkhead between
    # routes when set. Off by default because a new account's quota (10 concurrent executions) leaves
    # nothing to reserve: Lambda keeps min(100, quota) unreserved. `python -m cloudia.deploy` checks it.
    function_reserved_concurrency: int = 0
    function_memory_mb: int = 256
    log_retention_days: int = 30
    # WebSocket stage throttling (requests per second, burst).
    websocket_rate_limit: int = 50
    websocket_burst_limit: int = 100
    # Worker service (aws target): Fargate size and the autoscaling range.
    worker_cpu: int = 512
    worker_memory_mb: int = 1024
    worker_min_tasks: int = 1
    worker_max_tasks: int = 4
    # Backlog per step of the worker's step scaling on visible messages.
    worker_scale_out_backlog: int = 50
    # Scale on the jobs in flight too: the tasks' busy job slots, on average, kept near this percent.
    worker_target_slots_in_use: float = 70.0
    # Alarm when the oldest job waits longer than this.
    oldest_message_alarm_s: int = 300
    max_azs: int = 2
    llm_provider: str = "openai"
    llm_model: str = "gpt-4o-mini"
    # Optional second provider, used while the primary's circuit is open ("" = none).
    llm_fallback_provider: str = ""
    llm_fallback_model: str = ""
    # Sign-in (aws target; `make up` creates the local pool): off, an operator invites each user.
    user_pool_self_sign_up: bool = False
    # Lifetime of the ID and access tokens a connection opens with; the page refreshes before expiry.
    user_pool_access_token_minutes: int = 60
    # Lifetime of the refresh token: how long a person stays signed in without typing a password.
    user_pool_refresh_token_days: int = 30
    local_redis_url: str = "redis://localhost:6379/0"

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"target must be one of {TARGETS}, got {self.target!r} (cdk -c target=aws|local)")
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be one of {STAGES}, got {self.stage!r} (cdk -c stage=dev|prod)")
        if self.function_reserved_concurrency < 0:
            raise ConfigError("function_reserved_concurrency must be 0 (no reservation) or a number of "
                              f"concurrent executions per function, got {self.function_reserved_concurrency}")
        if self.resilience.max_receives < 1:
            raise ConfigError("resilience.max_receives must be at least 1")
        if self.worker_stop_timeout_s > FARGATE_MAX_STOP_TIMEOUT_S:
            raise ConfigError(
                f"resilience.worker_shutdown_grace_s ({self.resilience.worker_shutdown_grace_s}) + "
                f"{STOP_TIMEOUT_MARGIN_S} s must fit Fargate's {FARGATE_MAX_STOP_TIMEOUT_S} s stop timeout")
        if not COGNITO_TOKEN_MINUTES[0] <= self.user_pool_access_token_minutes <= COGNITO_TOKEN_MINUTES[1]:
            raise ConfigError(f"user_pool_access_token_minutes must be within {COGNITO_TOKEN_MINUTES} "
                              f"(what Cognito accepts), got {self.user_pool_access_token_minutes}")
        if not COGNITO_REFRESH_DAYS[0] <= self.user_pool_refresh_token_days <= COGNITO_REFRESH_DAYS[1]:
            raise ConfigError(f"user_pool_refresh_token_days must be within {COGNITO_REFRESH_DAYS} "
                              f"(what Cognito accepts), got {self.user_pool_refresh_token_days}")
        if self.resilience.job_liveness_s < 2 * self.resilience.job_heartbeat_s:
            raise ConfigError("resilience.job_liveness_s must be at least two heartbeats (job_heartbeat_s), "
                              "or one late beat makes a live job look dead")

    @property
    def is_aws(self) -> bool:
        return self.target == "aws"

    @property
    def is_prod(self) -> bool:
        return self.stage == "prod"

    @property
    def job_deadline_s(self) -> int:
        """The longest one job can take in the worker: one LLM call at its deadline (the longest
        answer `llm_max_tokens` allows at the slowest accepted rate), plus its writes."""
        return math.ceil(call_deadline_s(self.resilience) + JOB_WRITES_MARGIN_S)

    @property
    def drain_covers_longest_job(self) -> bool:
        """Whether SIGTERM lets every answer in flight finish. When not (a large `llm_max_tokens`), a
        call still running at the end of the grace is handed back and called again."""
        return self.resilience.worker_shutdown_grace_s >= self.job_deadline_s

    @property
    def jobs_visibility_timeout_s(self) -> int:
        """A liveness window past the first heartbeat: the worker extends it on every beat for as long
        as it works on the job (`worker/heartbeat.py`), so a message never reappears while a live worker
        holds it, however long the answer, and one whose worker died comes back within that window."""
        return self.resilience.job_visibility_s

    @property
    def worker_stop_timeout_s(self) -> int:
        """ECS waits this long after SIGTERM before SIGKILL: above the worker's own drain bound."""
        return math.ceil(self.resilience.worker_shutdown_grace_s) + STOP_TIMEOUT_MARGIN_S

    @property
    def nat_gateways(self) -> int:
        """One NAT gateway in dev (~32 USD a month each); one per AZ in prod, so losing an AZ does not
        cut the worker off from the LLM API."""
        return self.max_azs if self.is_prod else 1

    def stack_name(self, part: str) -> str:
        return f"cloudia-{self.target}-{self.stage}-{part}"

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> "AppConfig":
        """Build from `cdk.json` context (`-c key=value` overrides arrive as strings)."""
        known = {f for f in cls.__dataclass_fields__ if f != "resilience"}
        settings = context.get("settings", {})
        resilience = context.get("resilience", {})
        for section, values, allowed in (("settings", settings, known),
                                         ("resilience", resilience, set(Resilience.__dataclass_fields__))):
            unknown = set(values) - allowed
            if unknown:
                raise ConfigError(f"unknown keys in cdk.json context {section!r}: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for name in known:
            raw = context.get(name, settings.get(name))
            if raw is None:
                continue
            kwargs[name] = _typed(cls.__dataclass_fields__[name].default, raw, name)
        try:
            return cls(resilience=resilience_from(resilience), **kwargs)
        except TypeError as exc:
            raise ConfigError(f"incomplete cdk.json context: {exc}") from None


def _typed(default: Any, raw: Any, name: str) -> Any:
    """A context value in the type of its default (a `-c key=value` override is a string)."""
    if isinstance(default, bool):  # before int: a bool is an int
        if isinstance(raw, bool):
            return raw
        if str(raw).strip().lower() in ("true", "1", "yes"):
            return True
        if str(raw).strip().lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return str(raw)
