"""The environment the functions and the worker run with: one place, so both always agree on the
names (`cloudia.settings.Settings.from_env` reads them back)."""
from __future__ import annotations

from cloudia import metric_names
from cloudia.settings import resilience_env
from stacks.components.jobs_queue import JobsQueue
from stacks.components.redis_cache import RedisEndpoint
from stacks.components.tables import ChatTables
from stacks.config import AppConfig



def runtime_environment(config: AppConfig, *, service_name: str, jobs: JobsQueue, tables: ChatTables,
                        redis: RedisEndpoint) -> dict[str, str]:
    environment = {
        "JOBS_QUEUE_URL": jobs.queue.queue_url,
        "JOBS_DLQ_URL": jobs.dlq.queue_url,
        "HISTORY_TABLE": tables.history.table_name,
        "JOBS_TABLE": tables.jobs.table_name,
        "REDIS_URL": redis.url,
        "METRICS_NAMESPACE": metric_names.NAMESPACE,
        "POWERTOOLS_SERVICE_NAME": service_name,
        "POWERTOOLS_METRICS_NAMESPACE": metric_names.NAMESPACE,
        "LOG_LEVEL": "INFO",
        **resilience_env(config.resilience),
    }
    if redis.auth_secret is not None:
        environment["REDIS_AUTH_SECRET_ARN"] = redis.auth_secret.secret_arn
    return environment
