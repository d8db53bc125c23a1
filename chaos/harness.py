"""The system under chaos: the real fake LLM (with its ledger), gateway and worker processes, started by
the same code as `make up` (`local_runtime.up`), on free loopback ports, against a fresh queue, DLQ and
tables in the AWS emulator and a redis-server of its own (so it can be restarted for real)."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, TypeVar

import boto3

from cloudia import dlq
from cloudia.dlq_format import FAILURE_CLASS_ATTRIBUTE
from cloudia.history import USER
from cloudia.jobs import ANSWER_COMPLETE_LOG, RECALLS_ATTRIBUTE, RECOVERED_DETAIL, JobStore
from cloudia.settings import Resilience, Settings, resilience_env, resilience_from
from local_runtime import processes, up
from tests.support.aws_resources import Resources, create_resources
from tests.support.cpu import own_cpu_s, process_cpu_s
from tests.support.servers import MotoServer, RedisServer, free_ports

ROOT = Path(__file__).resolve().parents[1]
HTTP_TIMEOUT_S = 10

# Small breaker and backoff settings: retries and recoveries take seconds, so a run is bounded.
FAST_RESILIENCE = {
    "BREAKER_MIN_CALLS": "5",
    "BREAKER_OPEN_S": "2",
    "BREAKER_WINDOW_S": "10",
    "BACKOFF_BASE_S": "0.5",
    "BACKOFF_MAX_S": "2",
    "LLM_FIRST_TOKEN_TIMEOUT_S": "2",
    "LLM_STALL_TIMEOUT_S": "2",
    "JOB_HEARTBEAT_S": "2",
    "JOB_LIVENESS_S": "6",
    "WORKER_SHUTDOWN_GRACE_S": "2",
    "WORKER_POLL_WAIT_S": "1",
    # Slots for answers that stream for seconds: the long form's 300 waiting messages keep them full.
    "WORKER_CONCURRENCY": "128",
    "DLQ_SWEEP_S": "5",
}
# A worker killed with SIGKILL leaves its jobs invisible until their last heartbeat's extension runs
# out: the queue's own timeout is that window too, as the stacks set it.
CHAOS_QUEUE_VISIBILITY_S = resilience_from(FAST_RESILIENCE).job_visibility_s
# How the fake LLM writes unless a run says otherwise: a model's pace (0.5 s to the first token, then
# 45 tokens/s) with answers of 20-80 tokens, so a kill lands on calls in the middle of their stream.
CHAOS_LLM_PROFILE = {"first_token_ms": 500, "tokens_per_s": 45, "answer_tokens_min": 20, "answer_tokens_max": 80}


def aws_environment(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment the deployed functions and the worker would run with, from a `Settings`."""
    env = {f.name.upper(): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)
           if f.name != "resilience" and getattr(settings, f.name)}
    env.update(resilience_env(settings.resilience))
    return env


def http_json(url: str, method: str = "GET", body: dict | None = None) -> dict:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        return json.load(response)


_Part = TypeVar("_Part")


def _started(part: _Part | None, what: str) -> _Part:
    """A part that `System.start()` makes; a clear error before it ran."""
    if part is None:
        raise RuntimeError(f"the system's {what} is not started yet: call start() first")
    return part


@dataclass
class System:
    """One chaos run's system. `start()` brings it up, `stop()` stops what it started."""

    log_dir: Path
    env_overrides: Mapping[str, str] = field(default_factory=dict)
    # An emulator already running (tests, `python -m chaos`), else one of its own; boto3's per-service
    # variables (AWS_ENDPOINT_URL_DYNAMODB) send a service to another, here and in every child.
    aws_endpoint: str | None = None
    queue_visibility_s: int = CHAOS_QUEUE_VISIBILITY_S
    llm_profile: Mapping[str, int] = field(default_factory=lambda: dict(CHAOS_LLM_PROFILE))
    gateway_args: tuple[str, ...] = ("--heartbeat-s", "10")
    # The emulator processes already running, by name, to count their CPU with the rest.
    emulator_pids: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.stack = processes.StartedProcesses(self.log_dir)
        self._moto: MotoServer | None = None
        self.redis: RedisServer | None = None
        self.resources: Resources | None = None
        self.env: dict[str, str] = {}
        self.ports: up.Ports | None = None
        self.worker_restarts = 0
        self._cpu_of_the_ended: defaultdict[str, float] = defaultdict(float)  # of stopped children, by name

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "System":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not self.aws_endpoint:
            self._moto = MotoServer().start()
            self.aws_endpoint = self._moto.endpoint
            self.emulator_pids = {"emulator (moto)": self._moto.pid}
        os.environ.update(aws_environment(self.aws_endpoint))
        self.redis = RedisServer().start()
        self.resources = create_resources(Resilience(), redis_url=self.redis.url)
        self.sqs.set_queue_attributes(QueueUrl=self.settings.jobs_queue_url,
                                      Attributes={"VisibilityTimeout": str(self.queue_visibility_s)})
        gateway_port, llm_port = free_ports(2)
        self.ports = up.Ports(gateway=gateway_port, emulator=0, redis=self.redis.port, llm=llm_port)
        runtime_env = {**settings_env(self.settings), **FAST_RESILIENCE, **self.env_overrides,
                       "LOG_LEVEL": "INFO", "GATEWAY_LOG_LEVEL": "WARNING"}
        self.env = up.services_env(runtime_env, self.ports, aws_endpoint=self.aws_endpoint,
                                   llm_url=self.llm_url)
        try:
            self._start_llm()
            up.start_gateway(self.stack, self.env, self.ports, list(self.gateway_args))
            up.start_worker(self.stack, self.env)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.stack.stop()
        if self.redis is not None:
            self.redis.stop()
        if self._moto is not None:
            self._moto.stop()

    def __enter__(self) -> "System":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start_llm(self) -> None:
        child = self.stack.spawn("fake-llm", [sys.executable, "-m", "chaos.recording_llm", "--port",
                                              str(_started(self.ports, "ports").llm)], processes.child_env({}))
        if not processes.wait_until(lambda: processes.http_ok(f"{self.llm_url}/_faults"), processes.READY_TIMEOUT_S,
                                    child.proc):
            raise processes.StepFailed(f"the fake LLM did not start:\n{child.tail()}", f"see {child.log_path}")
        http_json(f"{self.llm_url}/_profile", "POST", dict(self.llm_profile))

    # -- what a run needs ---------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return _started(self.resources, "resources").settings

    @property
    def llm_url(self) -> str:
        return f"http://127.0.0.1:{_started(self.ports, 'ports').llm}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{_started(self.ports, 'ports').gateway}/ws"

    @property
    def sqs(self):
        return boto3.client("sqs")

    def token(self, user: str) -> str:
        gateway = _started(self.ports, "ports").gateway
        return http_json(f"http://127.0.0.1:{gateway}/dev/token?user={user}")["token"]

    def faults(self, **faults) -> None:
        """Set the fake LLM's faults (the whole setting); none resets them."""
        if faults:
            http_json(f"{self.llm_url}/_faults", "POST", faults)
        else:
            http_json(f"{self.llm_url}/_faults", "DELETE")

    def llm_stats(self) -> dict:
        return http_json(f"{self.llm_url}/_stats")

    def llm_served(self) -> dict:
        return http_json(f"{self.llm_url}/_served")

    def child(self, name: str) -> processes.Child:
        return next(c for c in self.stack.children if c.name == name)

    def alive(self, name: str) -> bool:
        return self.child(name).proc.poll() is None

    def kill_worker(self) -> None:
        """SIGKILL the worker (no shutdown, no hand-back: its jobs come back after their visibility)."""
        self._end_worker(signal.SIGKILL)

    def stop_worker(self) -> None:
        """SIGTERM the worker and wait for its shutdown (a no-op if none runs)."""
        self._end_worker(signal.SIGTERM)

    def _end_worker(self, sig: int) -> None:
        worker = next((c for c in self.stack.children if c.name == "worker"), None)
        if worker is None:
            return
        cpu_s = process_cpu_s(worker.proc.pid)
        os.kill(worker.proc.pid, sig)
        worker.proc.wait(timeout=worker.stop_timeout_s)
        self.stack.children.remove(worker)
        self._cpu_of_the_ended[worker.name] += cpu_s  # a SIGTERM's shutdown is not counted

    def start_worker(self) -> None:
        up.start_worker(self.stack, self.env)
        self.worker_restarts += 1

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds spent so far by each part of the system, by name (a restarted worker's lives
        summed; the emulators' when their processes are known; "clients" is this process)."""
        spent = defaultdict(float, self._cpu_of_the_ended)
        for child in self.stack.children:
            if child.proc.poll() is None:
                spent[child.name] += process_cpu_s(child.proc.pid)
        for name, pid in self.emulator_pids.items():
            spent[name] = process_cpu_s(pid)
        if self.redis is not None:
            spent["redis"] += process_cpu_s(self.redis.pid)
        spent["clients"] = own_cpu_s()
        return dict(spent)

    def restart_redis(self) -> None:
        redis = _started(self.redis, "Redis")
        self._cpu_of_the_ended["redis"] += process_cpu_s(redis.pid)
        redis.restart()

    def wait_dlq_visible(self, timeout_s: float = 45.0) -> None:
        """Until no DLQ message is hidden by a lease (a look, or the worker's sweep: 30 s, see
        worker_image/worker/dead_letters.py), for at most `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.queue_depth(self.settings.jobs_dlq_url).get(
                "ApproximateNumberOfMessagesNotVisible", 0):
            time.sleep(1.0)

    def queue_depth(self, url: str) -> dict[str, int]:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
        return {k: int(v) for k, v in attributes["Attributes"].items()}

    def recalls(self) -> tuple[int, int]:
        """(LLM calls made again because a dead worker had cut them, jobs answered from the finished
        text a dead worker had kept instead of being called again), over every job."""
        db = boto3.client("dynamodb")
        items = [item for page in db.get_paginator("scan").paginate(TableName=self.settings.jobs_table)
                 for item in page["Items"]]
        return (sum(int(item.get(RECALLS_ATTRIBUTE, {}).get("N", 0)) for item in items),
                sum(item.get("detail", {}).get("S", "") == RECOVERED_DETAIL for item in items))

    def answers_the_workers_kept(self) -> Counter[str]:
        """jobId -> how many times a worker kept the whole answer from the provider (its `LLM answer
        complete` log lines, written once the text is kept, so a recall does not pay for it again)."""
        seen: Counter[str] = Counter()
        for line in (self.log_dir / "worker.log").read_text(errors="replace").splitlines():
            if ANSWER_COMPLETE_LOG in line:
                try:
                    seen[json.loads(line)["job_id"]] += 1
                except (ValueError, KeyError):
                    pass  # a line cut by the kill
        return seen

    def job_states(self) -> dict[str, str]:
        """jobId -> status, for every job in the jobs table."""
        db = boto3.client("dynamodb")
        states = {}
        for page in db.get_paginator("scan").paginate(TableName=self.settings.jobs_table):
            for item in page["Items"]:
                row = {k: next(iter(v.values())) for k, v in item.items()}
                states[row["jobId"]] = row.get("status", "")
        return states

    def history(self) -> tuple[dict[str, set[str]], dict[str, str]]:
        """jobId -> the roles of its history entries (USER, ASSISTANT, ERROR), and the text of each
        user message -> its jobId."""
        db = boto3.client("dynamodb")
        roles: dict[str, set[str]] = {}
        user_messages: dict[str, str] = {}
        for page in db.get_paginator("scan").paginate(TableName=self.settings.history_table):
            for item in page["Items"]:
                row = {k: next(iter(v.values())) for k, v in item.items()}
                if "jobId" in row:
                    roles.setdefault(row["jobId"], set()).add(row.get("role", ""))
                    if row.get("role") == USER:
                        user_messages[row.get("message", "")] = row["jobId"]
        return roles, user_messages

    def dlq_jobs(self) -> dict[str, str]:
        """jobId -> failure class of the messages in the DLQ (looked at as the DLQ tool does)."""
        return {(m.job.job_id if m.job else f"<malformed {m.message_id}>"):
                m.message_attributes.get(FAILURE_CLASS_ATTRIBUTE, {}).get("StringValue", "(none)")
                for m in dlq.look(self.sqs, self.settings.jobs_dlq_url)}

    def jobs(self) -> JobStore:
        return JobStore.of(self.settings, boto3.client("dynamodb"))
