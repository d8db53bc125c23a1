"""Worker throughput against the ideal, and its CPU cost per job, on a model's streaming pace.

    .venv/bin/python bench/worker_throughput.py [--jobs 200] [--runs 3] [--concurrency 16]
        [--first-token-ms 500] [--tokens-per-s 45] [--answer-tokens 60] [--no-client] [--one-emulator]

Stands up moto, a redis-server, the fake LLM (a separate process, streaming each answer like a model:
`--first-token-ms` to the first token, then `--tokens-per-s`, `--answer-tokens` tokens long) and a
stand-in for the gateway's `@connections` API (a process of its own) that receives every pushed event;
queues `--jobs` jobs
for 50 users, each with a connection registered (unless `--no-client`), runs the real worker (OpenAI
provider over HTTP, breaker, heartbeat, DynamoDB, Redis, the tokens pushed as they stream) in this process,
and measures, per run: jobs answered per second against the ideal (concurrency / the answer's
length in time: every slot always busy waiting on the LLM), and the worker process's CPU
milliseconds per job (moto, Redis, the fake LLM and the gateway stand-in run elsewhere and are not
counted). Prints the median and the spread (min-max) over the runs, then the CPU each other process
used per job (the emulators, Redis, the fake LLM, the gateway stand-in), so a reader sees who bounds the
run: moto is one Python process per service, and SQS and DynamoDB each get their own (boto3's per-service
endpoints, `AWS_ENDPOINT_URL_SQS` and `AWS_ENDPOINT_URL_DYNAMODB`) unless `--one-emulator`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3
import redis as redis_lib

from cloudia.connections import ConnectionRegistry
from cloudia.jobs import Job, now_ms
from cloudia.settings import Resilience
from tests.support.aws_resources import create_resources
from tests.support.cpu import own_cpu_s, process_cpu_s
from tests.support.servers import MotoServer, RedisServer, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]


USERS = 50


def start_fake_llm(first_token_ms: int, tokens_per_s: float, answer_tokens: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "local_runtime.fake_llm", "--port", str(port),
                                "--first-token-ms", str(first_token_ms), "--tokens-per-s", str(tokens_per_s),
                                "--answer-tokens-min", str(answer_tokens), "--answer-tokens-max", str(answer_tokens)],
                               cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return process, f"http://127.0.0.1:{port}"


def start_gateway_stand_in() -> tuple[subprocess.Popen, str]:
    """The `@connections` stand-in in a process of its own: its CPU is not the worker's."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.support.connections_recorder", "--port", str(port)],
                               cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    wait_for_port(port)
    return process, f"http://127.0.0.1:{port}"


def connect_users(redis_url: str) -> None:
    """One WebSocket connection registered per user, as `$connect` does."""
    registry = ConnectionRegistry(redis_lib.Redis.from_url(redis_url, decode_responses=True), 3600)
    for i in range(USERS):
        registry.register(f"bench-conn-{i}", f"user-{i}")


def enqueue(queue_url: str, count: int) -> None:
    sqs = boto3.client("sqs")
    for start in range(0, count, 10):
        entries = []
        for i in range(start, min(start + 10, count)):
            job = Job(job_id=f"job-{uuid.uuid4().hex[:12]}", user_id=f"user-{i % USERS}", conversation_id="bench",
                      client_message_id=uuid.uuid4().hex, message=f"question number {i}", created_at_ms=now_ms())
            entries.append({"Id": str(i), "MessageBody": job.to_json()})
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


def one_run(settings, jobs: int, others: dict[str, int]) -> tuple[float, float, dict, dict[str, float]]:
    """(jobs per second, CPU ms per job, outcomes, CPU ms per job of each of `others`: name -> pid)
    for one batch of `jobs` queued jobs."""
    from worker.app import build_worker

    enqueue(settings.jobs_queue_url, jobs)
    worker = build_worker(settings, health_path=f"/tmp/bench-heartbeat-{os.getpid()}")
    loop = asyncio.new_event_loop()
    with contextlib.redirect_stdout(io.StringIO()):  # the EMF metric lines
        thread = threading.Thread(target=loop.run_until_complete, args=(worker.run(),), daemon=True)
        others_before = {name: process_cpu_s(pid) for name, pid in others.items()}
        cpu_before, started = own_cpu_s(), time.monotonic()
        thread.start()
        while sum(worker.outcomes.values()) < jobs:
            time.sleep(0.01)
            if time.monotonic() - started > 600:
                raise TimeoutError(f"only {worker.outcomes} after 600 s")
        elapsed = time.monotonic() - started
        cpu_used = own_cpu_s() - cpu_before
        others_ms = {name: (process_cpu_s(pid) - others_before[name]) * 1000 / jobs for name, pid in others.items()}
        loop.call_soon_threadsafe(worker.request_stop)
        thread.join(30)
    loop.close()
    return jobs / elapsed, cpu_used * 1000 / jobs, dict(worker.outcomes), others_ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--first-token-ms", type=int, default=500)
    parser.add_argument("--tokens-per-s", type=float, default=45)
    parser.add_argument("--answer-tokens", type=int, default=60)
    parser.add_argument("--no-client", action="store_true", help="no connection registered: nothing is pushed")
    parser.add_argument("--one-emulator", action="store_true", help="one moto process for every service")
    args = parser.parse_args(argv)

    from worker.telemetry import configure_logging
    # Per-job INFO lines would measure the terminal, not the worker.
    configure_logging(os.environ.get("BENCH_LOG_LEVEL", "WARNING"))

    moto, redis = MotoServer().start(), RedisServer().start()
    emulators = {"moto": moto}
    if not args.one_emulator:
        emulators = {"moto (SQS and the rest)": moto, "moto (DynamoDB)": MotoServer().start()}
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = emulators["moto (DynamoDB)"].endpoint
    fake_llm, fake_url = start_fake_llm(args.first_token_ms, args.tokens_per_s, args.answer_tokens)
    gateway, gateway_url = start_gateway_stand_in()
    os.environ.update(AWS_ENDPOINT_URL=moto.endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1")
    others = {**{name: server.pid for name, server in emulators.items()}, "redis-server": redis.pid,
              "fake LLM": fake_llm.pid, "@connections stand-in": gateway.pid}
    try:
        resilience = Resilience(worker_concurrency=args.concurrency, breaker_min_calls=10_000)
        settings = dataclasses.replace(
            create_resources(resilience, redis_url=redis.url).settings,
            llm_provider="openai", llm_base_url=f"{fake_url}/v1", llm_api_key="bench", llm_model="fake",
            ws_management_endpoint=gateway_url, worker_poll_wait_s=1)
        if not args.no_client:
            connect_users(redis.url)
        # The fake's answer is the echo, then filler up to its length: about `answer_tokens` tokens.
        answer_s = args.first_token_ms / 1000 + args.answer_tokens / args.tokens_per_s
        ideal = args.concurrency / answer_s
        print(f"worker throughput: {args.jobs} jobs x {args.runs} runs, concurrency {args.concurrency}, "
              f"fake LLM streaming {args.answer_tokens} tokens: {args.first_token_ms} ms to the first, then "
              f"{args.tokens_per_s:g} tokens/s ({answer_s:.2f} s an answer; OpenAI SDK over HTTP), "
              + ("no client connected" if args.no_client else
                 f"{USERS} users connected, tokens pushed every {resilience.token_push_interval_ms} ms"))
        rates, cpu_per_job, others_per_run = [], [], []
        for run in range(1, args.runs + 1):
            rate, cpu_ms, outcomes, others_ms = one_run(settings, args.jobs, others)
            rates.append(rate)
            cpu_per_job.append(cpu_ms)
            others_per_run.append(others_ms)
            print(f"  run {run}: {rate:6.1f} jobs/s ({rate / ideal:5.1%} of ideal), {cpu_ms:5.1f} CPU ms/job, "
                  f"outcomes {outcomes}")
        print(f"ideal (concurrency / latency): {ideal:.1f} jobs/s")
        print(f"throughput: median {statistics.median(rates):.1f} jobs/s "
              f"({statistics.median(rates) / ideal:.1%} of ideal), spread {min(rates):.1f}-{max(rates):.1f}")
        print(f"CPU per job: median {statistics.median(cpu_per_job):.1f} ms, "
              f"spread {min(cpu_per_job):.1f}-{max(cpu_per_job):.1f} ms")
        print("CPU per job of the other processes (median over the runs; the worker's above):")
        for name in others:
            print(f"  {name:24} {statistics.median(r[name] for r in others_per_run):7.1f} ms")
        gateway.terminate()
        pushes = int(gateway.communicate(timeout=10)[0])
        print(f"pushes to @connections: {pushes / (args.jobs * args.runs):.1f} per answer (tokens and the answer)")
    finally:
        if gateway.poll() is None:
            gateway.kill()
        fake_llm.terminate()
        fake_llm.wait(10)
        redis.stop()
        for server in emulators.values():
            server.stop()


if __name__ == "__main__":
    main()
