"""Structured JSON logs and CloudWatch metrics (embedded metric format on stdout) for the worker.

Powertools works outside Lambda: the Logger writes JSON lines, and `Metrics` prints EMF documents that
CloudWatch Logs turns into metrics (the ECS task logs to CloudWatch). The worker flushes them itself
(no Lambda decorator): on a timer, and at once for `CircuitOpened`, which the stacks alarm on with the
single dimension service=worker.
"""
from __future__ import annotations

import logging
import threading

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from cloudia import metric_names

SERVICE = metric_names.WORKER_SERVICE

logger = Logger(service=SERVICE)


def configure_logging(level: str = "INFO") -> None:
    """JSON logs for the worker and for the shared package's loggers (`cloudia.*`)."""
    logger.setLevel(level)
    copy_config_to_registered_loggers(source_logger=logger, include={"cloudia"})
    logging.getLogger("cloudia").setLevel(level)


class WorkerMetrics:
    """Thread-safe: the breaker reports transitions from the I/O threads."""

    def __init__(self, namespace: str):
        self._namespace = namespace
        self._metrics = Metrics(namespace=namespace, service=SERVICE)
        self._lock = threading.Lock()

    def _add(self, name: str, unit: MetricUnit, value: float) -> None:
        with self._lock:
            self._metrics.add_metric(name=name, unit=unit, value=value)

    def job_succeeded(self) -> None:
        self._add("JobsSucceeded", MetricUnit.Count, 1)

    def job_retried(self, failure_kind: str) -> None:
        """A job goes back to the queue to be tried again; by the kind of failure (timeout, status_503,
        throttled, infrastructure, ...)."""
        with self._lock, single_metric(name="JobsRetried", unit=MetricUnit.Count, value=1,
                                       namespace=self._namespace,
                                       default_dimensions={"service": SERVICE}) as metric:
            metric.add_dimension(name="failure_kind", value=failure_kind)

    def job_failed(self, failure_class: str) -> None:
        """A job failed for good; by class (permanent, exhausted, circuit_open, malformed)."""
        with self._lock, single_metric(name="JobsFailed", unit=MetricUnit.Count, value=1,
                                       namespace=self._namespace,
                                       default_dimensions={"service": SERVICE}) as metric:
            metric.add_dimension(name="failure_class", value=failure_class)

    def llm_call(self, elapsed_s: float, timing) -> None:
        """An answered call: its length, its time to first token and its writing rate."""
        self._add("LlmLatency", MetricUnit.Milliseconds, elapsed_s * 1000)
        if timing is not None and timing.first_token_s is not None:
            self._add("LlmFirstToken", MetricUnit.Milliseconds, timing.first_token_s * 1000)
        if timing is not None and timing.tokens_per_s is not None:
            self._add("LlmTokensPerSecond", MetricUnit.CountPerSecond, timing.tokens_per_s)

    def llm_recalled(self) -> None:
        """A job whose call a dead worker cut was called again."""
        self._add("LlmRecalls", MetricUnit.Count, 1)

    def queue_lag_ms(self, value: float) -> None:
        self._add("QueueLag", MetricUnit.Milliseconds, max(0.0, value))

    def slots_in_use(self, busy: int, slots: int) -> None:
        """How full the worker is: the fleet scales on the average over its tasks."""
        self._add(metric_names.SLOTS_IN_USE, MetricUnit.Percent, 100.0 * busy / max(1, slots))

    def circuit_opened(self) -> None:
        self._add(metric_names.CIRCUIT_OPENED, MetricUnit.Count, 1)
        self.flush()

    def circuit_closed(self) -> None:
        self._add("CircuitClosed", MetricUnit.Count, 1)
        self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._metrics.metric_set:  # an empty flush only prints a warning
                self._metrics.flush_metrics()
