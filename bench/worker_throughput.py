"""Worker throughput against the ideal, and its CPU cost per job.

    .venv/bin/python bench/worker_throughput.py [--jobs 200] [--runs 3] [--concurrency 16] [--latency-ms 500]

Stands up moto, a redis-server and the fake LLM (a separate process, 500 ms per answer by default),
queues `--jobs` jobs, runs the real worker (OpenAI provider over HTTP, breaker, DynamoDB, Redis) in
this process, and measures, per run: jobs answered per second against the ideal
(concurrency / LLM latency: every slot always busy waiting on the LLM), and the worker process's CPU
milliseconds per job (moto, Redis and the fake LLM run in other processes and are not counted).
Prints the median and the spread (min-max) over the runs.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "worker_image")]

import boto3  # noqa: E402

from cloudia.jobs import Job, now_ms  # noqa: E402
from cloudia.settings import Resilience  # noqa: E402
from tests.support.aws_resources import create_resources  # noqa: E402
from tests.support.servers import MotoServer, RedisServer, free_port, wait_for_port  # noqa: E402


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_fake_llm(latency_ms: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "local_runtime.fake_llm", "--port", str(port)],
                               cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    url = f"http://127.0.0.1:{port}"
    request = urllib.request.Request(f"{url}/_faults", data=json.dumps({"latency_ms": latency_ms}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).read()
    return process, url


def enqueue(queue_url: str, count: int) -> None:
    sqs = boto3.client("sqs")
    for start in range(0, count, 10):
        entries = []
        for i in range(start, min(start + 10, count)):
            job = Job(job_id=f"job-{uuid.uuid4().hex[:12]}", user_id=f"user-{i % 50}", conversation_id="bench",
                      client_message_id=uuid.uuid4().hex, message=f"question number {i}", created_at_ms=now_ms())
            entries.append({"Id": str(i), "MessageBody": job.to_json()})
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


def one_run(settings, jobs: int) -> tuple[float, float, dict]:
    """(jobs per second, CPU ms per job, outcomes) for one batch of `jobs` queued jobs."""
    from worker.app import build_worker

    enqueue(settings.jobs_queue_url, jobs)
    worker = build_worker(settings, health_path=f"/tmp/bench-heartbeat-{os.getpid()}")
    loop = asyncio.new_event_loop()
    with contextlib.redirect_stdout(io.StringIO()):  # the EMF metric lines
        thread = threading.Thread(target=loop.run_until_complete, args=(worker.run(),), daemon=True)
        cpu_before, started = cpu_s(), time.monotonic()
        thread.start()
        while sum(worker.outcomes.values()) < jobs:
            time.sleep(0.01)
            if time.monotonic() - started > 600:
                raise TimeoutError(f"only {worker.outcomes} after 600 s")
        elapsed = time.monotonic() - started
        cpu_used = cpu_s() - cpu_before
        loop.call_soon_threadsafe(worker.request_stop)
        thread.join(30)
    loop.close()
    return jobs / elapsed, cpu_used * 1000 / jobs, dict(worker.outcomes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=int, default=500)
    args = parser.parse_args(argv)

    from worker.telemetry import configure_logging
    configure_logging(os.environ.get("BENCH_LOG_LEVEL", "WARNING"))  # per-job INFO lines would measure the terminal, not the worker

    moto, redis = MotoServer().start(), RedisServer().start()
    fake_llm, fake_url = start_fake_llm(args.latency_ms)
    os.environ.update(AWS_ENDPOINT_URL=moto.endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1")
    try:
        resilience = Resilience(worker_concurrency=args.concurrency, breaker_min_calls=10_000)
        settings = dataclasses.replace(
            create_resources(resilience, redis_url=redis.url).settings,
            llm_provider="openai", llm_base_url=f"{fake_url}/v1", llm_api_key="bench", llm_model="fake",
            ws_management_endpoint="http://127.0.0.1:9", worker_poll_wait_s=1)
        ideal = args.concurrency / (args.latency_ms / 1000)
        print(f"worker throughput: {args.jobs} jobs x {args.runs} runs, concurrency {args.concurrency}, "
              f"fake LLM latency {args.latency_ms} ms (OpenAI SDK over HTTP), no client connected")
        rates, cpu_per_job = [], []
        for run in range(1, args.runs + 1):
            rate, cpu_ms, outcomes = one_run(settings, args.jobs)
            rates.append(rate)
            cpu_per_job.append(cpu_ms)
            print(f"  run {run}: {rate:6.1f} jobs/s ({rate / ideal:5.1%} of ideal), {cpu_ms:5.1f} CPU ms/job, "
                  f"outcomes {outcomes}")
        print(f"ideal (concurrency / latency): {ideal:.1f} jobs/s")
        print(f"throughput: median {statistics.median(rates):.1f} jobs/s "
              f"({statistics.median(rates) / ideal:.1%} of ideal), spread {min(rates):.1f}-{max(rates):.1f}")
        print(f"CPU per job: median {statistics.median(cpu_per_job):.1f} ms, "
              f"spread {min(cpu_per_job):.1f}-{max(cpu_per_job):.1f} ms")
    finally:
        fake_llm.terminate()
        fake_llm.wait(10)
        redis.stop()
        moto.stop()


if __name__ == "__main__":
    main()
