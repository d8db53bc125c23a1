"""The CloudWatch names the code publishes and the stacks alarm and scale on: one owner for both."""
from __future__ import annotations

NAMESPACE = "CloudIa"
# The `service` dimension of the worker's metrics (the functions' is their Powertools service name).
WORKER_SERVICE = "worker"
CIRCUIT_OPENED = "CircuitOpened"
# The share of the worker's job slots busy (percent), one value per metrics flush: what the worker
# fleet scales on, beside the backlog.
SLOTS_IN_USE = "WorkerSlotsInUse"
