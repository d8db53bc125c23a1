"""The busy-slots metric the worker fleet scales on: the name, unit and dimension the stack's
target-tracking policy reads (tests/infra/test_aws_stacks.py checks the policy's side)."""
from __future__ import annotations

import json

from cloudia import metric_names
from worker.telemetry import WorkerMetrics


def test_slots_in_use_is_published_as_a_percent_with_the_single_service_dimension(capsys):
    metrics = WorkerMetrics(metric_names.NAMESPACE)
    metrics.slots_in_use(busy=4, slots=16)
    metrics.flush()
    [document] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    [directive] = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == metric_names.NAMESPACE
    assert directive["Dimensions"] == [["service"]] and document["service"] == metric_names.WORKER_SERVICE
    assert {"Name": metric_names.SLOTS_IN_USE, "Unit": "Percent"} in directive["Metrics"]
    assert document[metric_names.SLOTS_IN_USE] == [25.0]
