"""The worker's entry point: `python -m worker`.

Settings are read once from the environment here and every dependency is built from them explicitly;
no Lambda decorators (the worker is a long-running container process, PID 1 in its task).
"""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import boto3

from cloudia import aws, redis_client
from cloudia.breaker import FALLBACK_BREAKER, PRIMARY_BREAKER, CircuitBreaker
from cloudia.completed_answers import CompletedAnswers
from cloudia.connections import ConnectionRegistry
from cloudia.context_cache import ContextCache
from cloudia.history import HistoryStore
from cloudia.job_lease import JobLeases
from cloudia.jobs import JobStore
from cloudia.limits import UsageLimits
from cloudia.llm import LlmProvider, build_fallback_provider, build_provider
from cloudia.push import ConnectionsApi, Pusher
from cloudia.settings import Settings
from worker.consumer import LONG_POLL_WAIT_S, Worker
from worker.healthcheck import health_file
from worker.processor import JobProcessor, Route
from worker.telemetry import WorkerMetrics, configure_logging

# Threads for blocking I/O beyond one per job: the metrics flush and the odd hand-back.
EXTRA_IO_THREADS = 4
# Threads for the jobs' heartbeats (three short calls per job every job_heartbeat_s), apart from the rest.
HEARTBEAT_THREADS = 8


def build_worker(settings: Settings, provider: LlmProvider | None = None,
                 fallback: LlmProvider | None = None, health_path: str | None = None) -> Worker:
    """Wire a worker from settings. `provider`/`fallback` override the configured ones (benchmarks)."""
    res = settings.resilience
    metrics = WorkerMetrics(settings.metrics_namespace)
    # One pooled connection per thread that may call AWS or Redis at once.
    io_threads = res.worker_concurrency + EXTRA_IO_THREADS
    pooled = io_threads + HEARTBEAT_THREADS
    redis = redis_client.client(settings, max_connections=pooled)
    dynamodb = aws.dynamodb(res, max_connections=pooled)

    def on_transition(name: str, state: str, scope: str) -> None:
        if state == "open":
            metrics.circuit_opened()
        elif state == "closed":
            metrics.circuit_closed()

    primary = Route(provider or build_provider(settings.llm_provider, settings),
                    CircuitBreaker(redis, res, PRIMARY_BREAKER, on_transition))
    fallback = fallback or build_fallback_provider(settings)
    fallback_route = None
    if fallback is not None:
        fallback_route = Route(fallback, CircuitBreaker(redis, res, FALLBACK_BREAKER, on_transition))
    executor = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="io")
    processor = JobProcessor(
        settings,
        sqs=aws.sqs(res, max_connections=pooled),
        jobs=JobStore.of(settings, dynamodb),
        history=HistoryStore.of(settings, dynamodb),
        cache=ContextCache(redis, res.context_ttl_s, res.context_max_messages),
        # As many HTTP connections to the gateway as job slots (more pushes at once wait for one).
        pusher=Pusher(ConnectionsApi.of(settings.ws_management_endpoint, boto3.session.Session(),
                                        res.sqs_timeout_ms / 1000, max_connections=res.worker_concurrency),
                      ConnectionRegistry(redis, res.connection_ttl_s)),
        primary=primary, fallback=fallback_route, metrics=metrics, executor=executor,
        heartbeat_executor=ThreadPoolExecutor(max_workers=HEARTBEAT_THREADS, thread_name_prefix="heartbeat"),
        leases=JobLeases(redis, res.job_liveness_s),
        completed=CompletedAnswers(redis_client.async_client(settings, max_connections=res.worker_concurrency)),
        limits=UsageLimits(redis, res.rate_limit_per_minute, res.daily_token_budget),
    )
    return Worker(settings, processor, aws.sqs_long_poll(res, max(LONG_POLL_WAIT_S, settings.worker_poll_wait_s)),
                  metrics, executor,
                  health_path or health_file())


async def serve(worker: Worker) -> None:
    worker.install_signal_handlers()
    await worker.run()


def main() -> None:
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    settings = Settings.from_env()
    worker = build_worker(settings)
    asyncio.run(serve(worker))


if __name__ == "__main__":
    main()
