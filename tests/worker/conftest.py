"""Worker test harness: the fake LLM server, the @connections recorder, and a worker running in a
background thread (or a subprocess) against moto and the real redis-server."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import threading
import time
import uuid

import boto3
import pytest
import redis as redis_lib

from cloudia import aws
from cloudia.breaker import CLOSED, PRIMARY_BREAKER
from cloudia.connections import ConnectionRegistry
from cloudia.history import USER, HistoryStore
from cloudia.jobs import Job, JobStore, now_ms
from cloudia.schema import breaker_key
from cloudia.settings import Settings, resilience_env
from local_runtime.fake_llm import FakeLlmServer
from tests.support.connections_recorder import ConnectionsRecorder

# Fast settings for tests; each test overrides what it measures.
FAST = dict(llm_first_token_timeout_s=2.0, llm_stall_timeout_s=2.0, job_heartbeat_s=0.5, job_liveness_s=1.5,
            backoff_base_s=0.2, breaker_min_calls=100, worker_shutdown_grace_s=5.0,
            worker_concurrency=4)


@pytest.fixture
def fake_llm():
    server = FakeLlmServer().start()
    yield server
    server.stop()


@pytest.fixture
def recorder():
    server = ConnectionsRecorder().start()
    yield server
    server.stop()


def breaker_state(harness, name: str = PRIMARY_BREAKER) -> str:
    """A breaker's state as every worker sees it (its Redis hash)."""
    return harness.redis.hget(breaker_key(name), "state") or CLOSED


def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Harness:
    """One test's world: settings pointing at moto, Redis, the fake LLM and the recorder."""

    def __init__(self, settings: Settings, fake_llm: FakeLlmServer, recorder: ConnectionsRecorder):
        self.base_settings = settings
        self.fake_llm = fake_llm
        self.recorder = recorder
        self.settings = self.configure()
        # One event loop per test: the SDKs' async clients belong to the loop that first used them.
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def configure(self, provider: str = "openai", **resilience) -> Settings:
        base_url = self.fake_llm.openai_base_url if provider == "openai" else self.fake_llm.anthropic_base_url
        self.settings = dataclasses.replace(
            self.base_settings, ws_management_endpoint=self.recorder.url, llm_provider=provider,
            llm_base_url=base_url, llm_api_key="test-key", llm_model="fake-model", worker_poll_wait_s=1,
            resilience=dataclasses.replace(self.base_settings.resilience, **{**FAST, **resilience}))
        return self.settings

    # -- AWS and Redis ------------------------------------------------------------------------
    @property
    def sqs(self):
        return boto3.client("sqs")

    @property
    def redis(self) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.settings.redis_url, decode_responses=True)

    @property
    def jobs(self) -> JobStore:
        return JobStore.of(self.settings, aws.dynamodb(self.settings.resilience))

    @property
    def history(self) -> HistoryStore:
        return HistoryStore.of(self.settings, aws.dynamodb(self.settings.resilience))

    def connect(self, user_id: str) -> str:
        """Register a WebSocket connection for the user, as the $connect handler does."""
        connection_id = f"conn-{uuid.uuid4().hex[:8]}"
        ConnectionRegistry(self.redis, 600).register(connection_id, user_id)
        return connection_id

    def send_job(self, user_id: str = "ana", message: str = "hello", conversation_id: str = "c1") -> Job:
        """What sendMessage does: record the job and the user message, then queue the job."""
        job = Job(job_id=f"job-{uuid.uuid4().hex[:10]}", user_id=user_id, conversation_id=conversation_id,
                  client_message_id=uuid.uuid4().hex, message=message, created_at_ms=now_ms())
        self.jobs.create(job, self.history.put_request(user_id, conversation_id, job.job_id, USER, message,
                                                       job.created_at_ms))
        self.sqs.send_message(QueueUrl=self.settings.jobs_queue_url, MessageBody=job.to_json())
        return job

    def queue_counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages of the jobs queue (or another)."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url or self.settings.jobs_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def kept_in_queue(self) -> int:
        """Every message the jobs queue holds: visible, in flight, or delayed."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.settings.jobs_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return sum(int(v) for v in attrs.values())

    def dlq_messages(self) -> list[dict]:
        response = self.sqs.receive_message(QueueUrl=self.settings.jobs_dlq_url, MaxNumberOfMessages=10,
                                            MessageAttributeNames=["All"], AttributeNames=["All"])
        return response.get("Messages", [])

    def receive(self, wait_s: int = 0) -> list[dict]:
        return self.sqs.receive_message(
            QueueUrl=self.settings.jobs_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s,
            AttributeNames=["ApproximateReceiveCount", "SentTimestamp"]).get("Messages", [])

    def processor(self, **overrides):
        """A JobProcessor wired like the worker's (to drive single messages by hand)."""
        from worker.app import build_worker
        return build_worker(self.settings, **overrides)._processor


class RunningWorker:
    """The worker's event loop in a background thread, stopped as SIGTERM would stop it."""

    def __init__(self, settings: Settings, health_path: str, **overrides):
        from worker.app import build_worker
        self.worker = build_worker(settings, health_path=health_path, **overrides)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)
        self.error: BaseException | None = None

    def _run(self):
        try:
            self._loop.run_until_complete(self.worker.run())
        except BaseException as error:  # noqa: BLE001 - surfaced by stop()
            self.error = error

    def start(self) -> "RunningWorker":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.worker.request_stop)
            self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "worker did not stop"
        if self.error:
            raise self.error


@pytest.fixture
def harness(settings, fake_llm, recorder):
    world = Harness(settings, fake_llm, recorder)
    yield world
    world.loop.close()


@pytest.fixture
def start_worker(tmp_path):
    started: list[RunningWorker] = []

    def start(settings: Settings, **overrides) -> RunningWorker:
        running = RunningWorker(settings, str(tmp_path / f"heartbeat-{len(started)}"), **overrides).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


# -- the worker as the container runs it (`python -m worker`), for signals and crashes ----------------
def worker_env(settings: Settings, health_file: str) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in vars(settings).items():
        if name != "resilience":
            env[name.upper()] = str(value)
    env.update(resilience_env(settings.resilience))
    env["HEALTH_FILE"] = health_file
    return env


@pytest.fixture
def worker_process(tmp_path):
    processes: list[subprocess.Popen] = []

    def start(settings: Settings) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "worker"], env=worker_env(settings, str(tmp_path / "hb")),
                                   stdout=open(tmp_path / "worker.log", "ab"), stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def wait_llm_call_started(harness):
    wait_until(lambda: harness.fake_llm.stats()["requests"] >= 1, timeout_s=20, what="the LLM call to start")
