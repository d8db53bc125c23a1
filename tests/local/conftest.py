"""The local runtime for end-to-end tests: the real fake LLM, gateway and worker processes, started by
the same code as `make up` (`local_runtime.up.start_services`), on free ports, against the test's own
queue, DLQ and tables in the emulator and the session's Redis."""
from __future__ import annotations

import dataclasses
import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudia.settings import Settings, resilience_env
from local_runtime import processes, up
from tests.support.servers import free_ports

# Small breaker and backoff settings, so opening and closing the circuit takes seconds.
FAST_RESILIENCE = {
    "BREAKER_MIN_CALLS": "2",
    "BREAKER_OPEN_S": "2",
    "BREAKER_WINDOW_S": "10",
    "BACKOFF_BASE_S": "0.5",
    "BACKOFF_MAX_S": "2",
    "LLM_FIRST_TOKEN_TIMEOUT_S": "6",
    "LLM_STALL_TIMEOUT_S": "6",
    "JOB_HEARTBEAT_S": "1",
    "JOB_LIVENESS_S": "3",
    "WORKER_SHUTDOWN_GRACE_S": "2",
    # Below the grace: a stopping worker's open long poll ends before it exits (else the poll could
    # still catch a message for the dead process, invisible until its visibility timeout).
    "WORKER_POLL_WAIT_S": "1",
    # Short enough for a test to send a longer message.
    "MAX_MESSAGE_CHARS": "200",
}


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment the deployed functions would run with, from a `Settings`."""
    env = {f.name.upper(): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)
           if f.name != "resilience" and getattr(settings, f.name)}
    env.update(resilience_env(settings.resilience))
    return env


@dataclass
class RunningStack:
    ports: up.Ports
    env: dict
    stack: processes.StartedProcesses
    gateway_args: list

    @property
    def page(self) -> str:
        return f"http://localhost:{self.ports.gateway}/"

    @property
    def ws(self) -> str:
        return f"ws://localhost:{self.ports.gateway}/ws"

    def token(self, user: str) -> str:
        with urllib.request.urlopen(f"{self.page}dev/token?user={user}", timeout=5) as response:
            return json.load(response)["token"]

    def faults(self, **faults) -> None:
        method = "POST" if faults else "DELETE"
        request = urllib.request.Request(f"http://localhost:{self.ports.llm}/_faults", method=method,
                                         data=json.dumps(faults).encode() if faults else None,
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).close()

    def child(self, name: str) -> processes.Child:
        return next(c for c in self.stack.children if c.name == name)

    def stop_gateway(self) -> None:
        self._stop("gateway", timeout_s=15)

    def start_gateway(self) -> None:
        up.start_gateway(self.stack, self.env, self.ports, self.gateway_args)

    def stop_worker(self) -> None:
        self._stop("worker", timeout_s=30)

    def start_worker(self) -> None:
        up.start_worker(self.stack, self.env)

    def _stop(self, name: str, timeout_s: float) -> None:
        child = self.child(name)
        child.proc.terminate()
        child.proc.wait(timeout=timeout_s)
        self.stack.children.remove(child)

    def logs(self) -> str:
        return "\n".join(f"--- {c.name}\n{c.tail(40)}" for c in self.stack.children)


def pytest_configure(config):
    config.addinivalue_line("markers", "gateway_args(*args): extra command-line flags for the local gateway")


@pytest.fixture
def local_stack(request, resources, tmp_path: Path):
    gateway_port, llm_port = free_ports(2)
    ports = up.Ports(gateway=gateway_port, emulator=0, redis=0, llm=llm_port)
    runtime_env = {**settings_env(resources.settings), **FAST_RESILIENCE}
    stack = processes.StartedProcesses(tmp_path)
    marker = request.node.get_closest_marker("gateway_args")
    gateway_args = ["--heartbeat-s", "5", *(marker.args if marker else ())]
    try:
        # A model's shape on a fast clock: the answers stream, token by token, in a fraction of a second.
        env = up.start_services(stack, runtime_env, ports, aws_endpoint=os.environ["AWS_ENDPOINT_URL"],
                                gateway_args=gateway_args, llm_profile="brisk")
        running = RunningStack(ports, env, stack, gateway_args)
        yield running
        print(running.logs())
    finally:
        stack.stop()
