"""Runtime settings, read once from the environment.

`Resilience` holds every resilience default of the architecture (units in the names). The CDK app
reads the same fields from `cdk.json` context and passes them to the functions and the worker as
environment variables, so an operator changes them in one place; a test keeps `cdk.json` and these
defaults equal.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from cloudia import metric_names


@dataclass(frozen=True)
class Resilience:
    # Timeouts (the architecture's: Lambda 29 s, worker -> LLM 5-10 s, -> Redis 500 ms, -> DynamoDB 1 s).
    lambda_timeout_s: int = 29
    # The architecture's "worker -> LLM 5-10 s" bounds the HTTP exchange, not the length of an answer: a
    # healthy model writes a long answer for a minute. Every call streams; its bounds are the connect,
    # the time to the first token, the longest stall between two tokens, and a total derived from
    # `llm_max_tokens` at the slowest acceptable rate (see `cloudia/llm/timing.py`).
    llm_connect_timeout_s: float = 5.0
    llm_first_token_timeout_s: float = 10.0
    llm_stall_timeout_s: float = 10.0
    # Set on every call: it bounds the call's length, its cost and the budget it may spend.
    llm_max_tokens: int = 1024
    # Below this average rate a call is cut: 10 + 1024 / 12 = 95 s at most with the defaults.
    llm_min_tokens_per_s: float = 12.0
    redis_timeout_ms: int = 500
    dynamodb_timeout_ms: int = 1000
    sqs_timeout_ms: int = 2000
    # Retries: 1st immediate, then 2 s, 4 s, 8 s ... with jitter, through the message's visibility.
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    backoff_jitter_ratio: float = 0.2
    max_receives: int = 5
    # A job kept while the LLM's circuit is open waits at most this long, then goes to the DLQ (user told).
    circuit_hold_max_s: int = 3600
    # Liveness of a job being answered: every `job_heartbeat_s` its worker extends the message's
    # visibility, renews the job's lease and refreshes its `calling` mark. A mark not refreshed for
    # `job_liveness_s` (three missed beats) was left by a dead worker.
    job_heartbeat_s: float = 10.0
    job_liveness_s: float = 30.0
    # A job whose LLM call a dead worker cut short (SIGKILL, OOM, lost host) is called again this many
    # times in a row (its stream was cut, so the provider stopped generating and billing); one more
    # crash in a row sends it to the DLQ with its user told. 0: never called again (a redrive calls
    # again on purpose).
    llm_recalls_after_crash: int = 1
    # How often a worker tells the users of jobs SQS moved to the DLQ by itself (a worker died during
    # the job's last attempt), see worker_image/worker/dead_letters.py.
    dlq_sweep_s: int = 60
    # Circuit breaker around the LLM provider.
    breaker_window_s: float = 30.0
    breaker_min_calls: int = 5
    breaker_failure_rate: float = 0.5
    breaker_slow_call_rate: float = 0.5
    # A slow call: its first token later than this, or its tokens slower than the floor (a call that
    # fails slowly is slow too); never the length of a healthy answer.
    breaker_slow_first_token_s: float = 5.0
    breaker_slow_tokens_per_s: float = 20.0
    breaker_open_s: float = 15.0
    breaker_half_open_probes: int = 2
    # Worker.
    worker_concurrency: int = 16
    # SIGTERM lets the answers in flight finish within this (the longest call, 95 s, plus its writes);
    # ECS's stop timeout is 10 s above it, within Fargate's 120 s.
    worker_shutdown_grace_s: float = 105.0
    # TTLs. API Gateway drops a WebSocket connection after 2 h, so a registration cannot outlive it.
    connection_ttl_s: int = 7200
    context_ttl_s: int = 3600
    context_max_messages: int = 20
    idempotency_ttl_s: int = 3600
    history_ttl_days: int = 30
    job_ttl_days: int = 7
    # FinOps: per-user guards against unexpected cost.
    rate_limit_per_minute: int = 20
    daily_token_budget: int = 50_000
    max_message_chars: int = 8_000
    # Per-user bounds beyond messages, so that one user cannot spend the stage-wide throttle (and the
    # pushes of every answer) for everyone; 0 turns one off. Open connections: the page opens one per
    # tab (two for a moment while it refreshes its token), and a person has a few tabs and devices open
    # at once; 10 is well above that, and bounds the copies of each answer the worker pushes (every
    # token goes to every connection of the user). A closed or expired connection frees its place.
    max_connections_per_user: int = 10
    # `ping` and `history`/`resume` frames of a user a minute, counted together: a page pings every
    # 30 s and asks for the history when it (re)connects, so even 10 open tabs send about 30.
    frame_rate_limit_per_minute: int = 60
    # Streamed tokens go out to a connection at most this often, coalesced: API Gateway bills each
    # message and the worker pays a signed HTTP call for each (5 a second reads as smooth streaming).
    token_push_interval_ms: int = 200

    @property
    def connection_tombstone_s(self) -> int:
        """How long a closed connection may not be registered again: longer than a frame of it can
        still be handled after its `$disconnect` (a cold start's init, up to 10 s, plus the function's
        timeout), with a wide margin: four function timeouts (116 s with the defaults)."""
        return 4 * self.lambda_timeout_s

    @property
    def job_visibility_s(self) -> int:
        """How long a job's message stays hidden after its receive or its last heartbeat: a liveness
        window past the next beat (the jobs queue's visibility timeout, and each beat's extension)."""
        return math.ceil(self.job_liveness_s + self.job_heartbeat_s)


def _coerce(kind: type, raw: str):
    if kind is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return kind(raw)


def resilience_from(values: Mapping[str, object]) -> Resilience:
    """Build `Resilience` from a mapping keyed by field name (cdk.json) or by upper-case name (env)."""
    kwargs = {}
    for f in dataclasses.fields(Resilience):
        for key in (f.name, f.name.upper()):
            if key in values:
                kind: Any = type(f.default)
                raw = values[key]
                kwargs[f.name] = _coerce(kind, raw) if isinstance(raw, str) else kind(raw)
                break
    return Resilience(**kwargs)


def resilience_env(resilience: Resilience) -> dict[str, str]:
    """The environment variables that carry `resilience` to a function or the worker."""
    return {f.name.upper(): str(getattr(resilience, f.name)) for f in dataclasses.fields(Resilience)}


@dataclass(frozen=True)
class Settings:
    """Names and endpoints of a deployment, plus its resilience settings."""

    jobs_queue_url: str = ""
    # The worker sends a permanently failed job straight to the DLQ instead of retrying it 5 times.
    jobs_dlq_url: str = ""
    history_table: str = ""
    jobs_table: str = ""
    # redis://host:port/0 locally; rediss://... (TLS) on AWS with the AUTH token from Secrets Manager.
    redis_url: str = "redis://localhost:6379/0"
    redis_auth_secret_arn: str = ""
    # The Cognito user pool whose tokens open a connection, and its app client (see cloudia/auth.py).
    user_pool_id: str = ""
    user_pool_client_id: str = ""
    # Local target only: where the emulator serves the pool's key set (a loopback URL, refused otherwise).
    cognito_jwks_url: str = ""
    # API Gateway Management API endpoint (https://{api}.execute-api.{region}.amazonaws.com/{stage}).
    ws_management_endpoint: str = ""
    llm_provider: str = "fake"
    llm_fallback_provider: str = ""
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: str = ""
    llm_api_key_secret_arn: str = ""
    # The fallback provider's own endpoint, model and key (used while the primary's circuit is open).
    llm_fallback_base_url: str = ""
    llm_fallback_model: str = ""
    llm_fallback_api_key: str = ""
    llm_fallback_api_key_secret_arn: str = ""
    metrics_namespace: str = metric_names.NAMESPACE
    # SQS long-poll wait of the worker (20 s, the most SQS allows: an idle worker costs 3 requests a
    # minute). A shutdown that hands jobs back first lets an open poll end, so keep it below the grace.
    worker_poll_wait_s: int = 20
    resilience: Resilience = field(default_factory=Resilience)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        kwargs = {
            f.name: _coerce(type(f.default), env[f.name.upper()])
            for f in dataclasses.fields(cls)
            if f.name != "resilience" and f.name.upper() in env
        }
        return cls(**kwargs, resilience=resilience_from(env))
