"""The four chaos scenarios. Each takes a `Profile` (short for `make test`, long for `make chaos`), brings
up its own system, does its harm for real, waits (bounded) for the dust to settle and returns an
`Outcome` whose table says what was sent, answered, dead-lettered, lost and duplicated."""
from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine

from chaos import fuzz
from chaos.accounting import Outcome, account, percentiles_ms, settle
from chaos.clients import ChatClient, Ledger
from chaos.harness import FAST_RESILIENCE, ROOT, System
from chaos.recording_llm import POISON_MARKER
from cloudia.jobs import ANSWERED, CALLING


@dataclass(frozen=True)
class Profile:
    name: str
    # 1. load under faults
    load_messages: int
    load_clients: int
    load_worker_kills: int
    load_settle_s: float
    # 2. LLM outage
    outage_s: float
    outage_clients: int
    outage_send_interval_s: float
    # 3. poison message: the backoff base (the real default is 2 s)
    poison_backoff_base_s: float
    # 4. fuzzer
    fuzz_frames: int
    fuzz_connections: int
    fuzz_oversized: int
    # How the fake LLM writes: a model's pace (0.5 s to the first token, then 45 tokens/s); the answer
    # lengths say how long each call is exposed to a kill.
    llm_profile: tuple[tuple[str, int], ...] = ()


SHORT = Profile("short", load_messages=160, load_clients=20, load_worker_kills=2, load_settle_s=120,
                outage_s=5, outage_clients=4, outage_send_interval_s=0.5,
                poison_backoff_base_s=1.0,
                fuzz_frames=1000, fuzz_connections=4, fuzz_oversized=5,
                llm_profile=(("first_token_ms", 500), ("tokens_per_s", 45), ("answer_tokens_min", 20),
                             ("answer_tokens_max", 80)))
# Each answer streams for seconds, as a model writes it: 3,000 messages from 100 clients (300 waiting
# at most) keep the worker's slots full, and scenario 1 near three and a half minutes on 2 cores.
LONG = Profile("long", load_messages=3_000, load_clients=100, load_worker_kills=5, load_settle_s=900,
               outage_s=60, outage_clients=20, outage_send_interval_s=3.2,
               poison_backoff_base_s=2.0,
               fuzz_frames=20_000, fuzz_connections=8, fuzz_oversized=100,
               llm_profile=(("first_token_ms", 500), ("tokens_per_s", 45), ("answer_tokens_min", 40),
                            ("answer_tokens_max", 160)))

# Shares of all LLM requests in scenario 1: 20 % 5xx, 5 % timeouts, 5 % 429 with Retry-After.
ERROR_SHARE, TIMEOUT_SHARE, THROTTLE_SHARE = 0.20, 0.05, 0.05
# Per-user limits raised for the load (the defaults would refuse a flood from one user, by design).
LOAD_LIMITS = {"RATE_LIMIT_PER_MINUTE": "1000000", "DAILY_TOKEN_BUDGET": "1000000000",
               # Its clients ping every 2 s while they wait (a page pings every 30 s).
               "FRAME_RATE_LIMIT_PER_MINUTE": "1000000",
               # 30 % faults are the weather of this run, not an outage. A failure is back at once and an
               # answer takes seconds, so a window's first outcomes, when the worker starts its
               # concurrency's calls together, are nearly all failures: the circuit waits for more
               # outcomes than that burst (else it opens at every worker start, by chance of order).
               "BREAKER_MIN_CALLS": str(int(FAST_RESILIENCE["WORKER_CONCURRENCY"]) * 3 // 2)}
# Scenario 1: its harms come at least this far apart, past a redelivery (the queue's visibility) and a
# recalled answer, so each fault is met on its own. Two kills within one recall are a crash loop, which
# sends the job to the DLQ by design (tests/worker/test_cut_calls.py); a Redis restart between a kill
# and its redelivery loses the answers the dead worker had kept (cloudia/completed_answers.py).
HARM_SPACING_S = 20.0
# Scenario 1: each client keeps at most this many messages waiting for an answer (or this long).
MAX_UNANSWERED, UNANSWERED_WAIT_S = 3, 30.0
# Scenario 4's good clients chat at the pace of a person, within the default rate limit (20 a minute).
GOOD_CLIENTS, GOOD_CLIENT_INTERVAL_S = 10, 3.5
# The fuzzer sends this many frames back to back on a connection, then counts the replies.
FUZZ_WINDOW = 25
# A malformed frame not answered within this is counted as unanswered.
FUZZ_REPLY_TIMEOUT_S = 3.0


def mixed_faults() -> dict:
    """The fake LLM rolls timeout, then 429, then 5xx, each on what the previous left: conditional rates
    that make the shares of all requests the ones above."""
    throttle = THROTTLE_SHARE / (1 - TIMEOUT_SHARE)
    error = ERROR_SHARE / (1 - TIMEOUT_SHARE - THROTTLE_SHARE)
    return {"timeout_rate": TIMEOUT_SHARE, "throttle_rate": round(throttle, 6), "retry_after_s": 1,
            "error_rate": round(error, 6), "error_status": 503}


async def _clients(system: System, ledger: Ledger, count: int, prefix: str) -> list[ChatClient]:
    clients = [ChatClient(system.ws_url, functools.partial(system.token, f"{prefix}-{i}"), f"{prefix}-{i}", ledger)
               for i in range(count)]
    await asyncio.gather(*(c.connect() for c in clients))
    return clients


async def _close(clients: list[ChatClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def cpu_shares(cpu_s: dict[str, float], elapsed_s: float) -> dict[str, float]:
    """Each process's CPU over a run as cores busy on average, the busiest first."""
    return {name: round(spent / elapsed_s, 2) for name, spent in sorted(cpu_s.items(), key=lambda kv: -kv[1])}


def _run_id() -> str:
    return f"{int(time.time())}-{os.getpid()}"


# -- 1. load under LLM faults, worker SIGKILLs and a Redis restart ----------------------------------
async def load_under_faults(profile: Profile, log_dir: Path, aws_endpoint: str | None = None,
                            timeline_path: Path | None = None, emulator_pids: dict[str, int] | None = None) -> Outcome:
    run = _run_id()
    with System(log_dir / "1-load", env_overrides=LOAD_LIMITS, aws_endpoint=aws_endpoint,
                llm_profile=dict(profile.llm_profile), emulator_pids=emulator_pids or {}) as system:
        system.faults(**mixed_faults())
        ledger = Ledger()
        clients = await _clients(system, ledger, profile.load_clients, "load")
        per_client = [profile.load_messages // profile.load_clients
                      + (i < profile.load_messages % profile.load_clients) for i in range(profile.load_clients)]
        events: list[tuple[float, str]] = []
        cut_by_kills: list[int] = []  # the jobs each SIGKILL left `calling`
        loop = asyncio.get_running_loop()
        # The harm, at fixed shares of the messages sent: SIGKILLs spread out, the Redis restart in the middle.
        kill_points = [(k + 1) / (profile.load_worker_kills + 1) for k in range(profile.load_worker_kills)]
        harm = sorted([(p, "worker SIGKILL") for p in kill_points]
                      + [(0.5 + 0.5 / (len(kill_points) + 2), "redis restart")])

        async def harm_driver() -> None:
            last_harm = 0.0
            for share, what in harm:
                while (len(ledger.sent) < share * profile.load_messages
                       or time.monotonic() - last_harm < HARM_SPACING_S):
                    await asyncio.sleep(0.05)
                last_harm = time.monotonic()
                events.append((time.time(), what))
                if what == "worker SIGKILL":
                    await loop.run_in_executor(None, system.kill_worker)
                    # What the dead worker left `calling` (nothing else writes the table until the restart).
                    states = await loop.run_in_executor(None, system.job_states)
                    cut_by_kills.append(sum(state == CALLING for state in states.values()))
                    await loop.run_in_executor(None, system.start_worker)
                else:
                    await loop.run_in_executor(None, system.restart_redis)

        async def one_client(client: ChatClient, count: int) -> None:
            last_ping = time.monotonic()
            missed = False
            mine: list = []
            for n in range(count):
                # Like a person, a client does not run far ahead of its answers: the backlog stays
                # bounded and the run measures the system, not an ever longer queue.
                waited = time.monotonic()
                while True:
                    waiting = [s for s in mine if s.accepted and not s.answers and not s.errors]
                    if len(waiting) < MAX_UNANSWERED or time.monotonic() - waited > UNANSWERED_WAIT_S:
                        break
                    if time.monotonic() - last_ping > 2:
                        missed = await client.ping() or missed
                        last_ping = time.monotonic()
                    if missed:
                        # As the page does: answers pushed while this connection was not registered
                        # (Redis lost the registrations) are in the history.
                        await client.resume("chaos", min(s.sent_at for s in waiting) - 5)
                        missed = False
                    await asyncio.sleep(0.05)
                mine.append(await client.send_message(f"chaos load {run} {client.user} #{n}"))
                if time.monotonic() - last_ping > 2:  # the page's heartbeat: keeps the registration alive
                    missed = await client.ping() or missed
                    last_ping = time.monotonic()

        started, cpu_before = time.time(), system.cpu_seconds()
        await asyncio.gather(harm_driver(), *(one_client(c, n) for c, n in zip(clients, per_client)))
        sent_s = time.time() - started
        settled = await settle(system, ledger, profile.load_settle_s)
        finished = time.time()
        cpu_s = {name: spent - cpu_before.get(name, 0.0) for name, spent in system.cpu_seconds().items()}
        await _close(clients)
        outcome = account("1 load under LLM faults, worker SIGKILLs, Redis restart", system, ledger)
        recalls, recovered = system.recalls()
        latencies = [s.answered_at - s.sent_at for s in ledger.sent if s.answered_at and not s.answered_by_history]
        outcome.figures.update({
            "LLM faults": mixed_faults(),
            "limits raised for the load": LOAD_LIMITS,
            "clients": profile.load_clients,
            "harm": ", ".join(f"{what} at {time.strftime('%H:%M:%S', time.gmtime(t))}.{int(t % 1 * 1000):03d} "
                              f"(+{t - started:.1f}s)" for t, what in events),
            "worker restarts": system.worker_restarts,
            "client reconnects": sum(c.reconnects for c in clients),
            "answers a client read from the history (pushed while it was not registered)":
                sum(s.answered_by_history for s in ledger.sent),
            "sending took (s)": round(sent_s, 1),
            "all settled after (s)": round(finished - started, 1),
            "answers per second (answered / all settled after)": round(outcome.answered / (finished - started), 1),
            "CPU by process, cores (of the machine's)": cpu_shares(cpu_s, finished - started),
            "CPU ms per answer, all processes": round(sum(cpu_s.values()) * 1000 / max(outcome.answered, 1), 1),
            "send-to-answer latency, answered live (ms)": percentiles_ms(latencies),
            "LLM requests": system.llm_stats(),
            "LLM profile": system.llm_profile,
            "LLM calls each SIGKILL cut (jobs left `calling`)": cut_by_kills,
            "calls made again after a kill cut them (recalls)": recalls,
            "answers finished just before a kill, kept and not paid again": recovered,
        })
        outcome.checks["recalls <= the calls the kills cut"] = recalls <= sum(cut_by_kills)
        outcome.checks["answers paid twice unkept by a killed worker <= recalls"] = outcome.unkept_recalled <= recalls
        # A kill costs a job the receive it was on: only a job the LLM had failed on its other
        # receives may reach the DLQ through one (SQS moves it after its last receive is lost).
        max_receives = system.settings.resilience.max_receives
        outcome.checks["in the DLQ only jobs the LLM failed (none by kills alone)"] = all(
            failure == "exhausted"
            or (failure == "max_receives" and outcome.unfinished_calls[job] >= max_receives - 1)
            for job, failure in outcome.dead_letters.items())
        outcome.checks["every accepted job settled before the deadline"] = settled
        outcome.checks["every worker SIGKILL and the Redis restart happened"] = len(events) == len(harm)
        outcome.checks["gateway still up"] = system.alive("gateway")
        if timeline_path is not None:
            timeline_path.write_text(json.dumps({
                "started": started,
                "events": events,
                "answers": [(s.sent_at, s.answered_at) for s in ledger.sent
                            if s.answered_at and not s.answered_by_history],
            }))
        return outcome


# -- 2. the LLM down, then back --------------------------------------------------------------------
async def llm_outage(profile: Profile, log_dir: Path, aws_endpoint: str | None = None,
                     env_overrides: dict | None = None, name: str = "2 LLM outage, then back") -> Outcome:
    run = _run_id()
    with System(log_dir / "2-outage", env_overrides=env_overrides or {}, aws_endpoint=aws_endpoint,
                llm_profile=dict(profile.llm_profile)) as system:
        ledger = Ledger()
        clients = await _clients(system, ledger, profile.outage_clients, "outage")
        # Before: the LLM answers.
        await asyncio.gather(*(c.send_message(f"outage before {run} {c.user}") for c in clients))
        await settle(system, ledger, 30)
        calls_before = system.llm_stats()["requests"]
        system.faults(down=True)
        outage_started = time.time()
        during: list = []

        async def keep_sending(client: ChatClient) -> None:
            n = 0
            while time.time() - outage_started < profile.outage_s:
                during.append(await client.send_message(f"outage during {run} {client.user} #{n}"))
                n += 1
                await asyncio.sleep(profile.outage_send_interval_s)

        await asyncio.gather(*(keep_sending(c) for c in clients))
        calls_during = system.llm_stats()["requests"] - calls_before
        system.faults()
        recovered = time.time()
        settled = await settle(system, ledger, max(60.0, profile.outage_s * 2))
        await _close(clients)
        outcome = account(name, system, ledger)
        held = [s for s in during if s.ack == "held"]
        first_error_s = []  # send -> the first error event about the job (the fail-fast one when held)
        for s in during:
            if s.errors:
                first_error_s.append(min(t for _, t in s.errors) - s.sent_at)
        states = system.job_states()
        answered_after = sum(1 for s in during if s.accepted and (s.answers or states.get(s.job_id) == ANSWERED))
        outcome.figures.update({
            "outage (s)": profile.outage_s,
            "breaker settings": {k: system.env[k] for k in ("BREAKER_MIN_CALLS", "BREAKER_WINDOW_S",
                                                            "BREAKER_OPEN_S", "BACKOFF_BASE_S")},
            "messages sent during the outage": len(during),
            "accepted and held with the fail-fast error at once": len(held),
            "send -> circuit error event (ms)": percentiles_ms([s.ack_at - s.sent_at for s in held]),
            "send -> first error event, any (ms)": percentiles_ms(first_error_s),
            "LLM calls during the outage": calls_during,
            "answered after recovery (of those sent during the outage)": answered_after,
            "recovered to all settled (s)": round(time.time() - recovered, 1),
        })
        outcome.checks["every accepted job settled before the deadline"] = settled
        outcome.figures["_raw"] = {"held": len(held), "calls_during": calls_during, "during": len(during),
                                   "fail_fast_s": [s.ack_at - s.sent_at for s in held],
                                   "first_error_s": first_error_s}
        return outcome


# -- 3. a poison message, the DLQ, its alarm condition and the redrive ---------------------------------
def poison_schedule_ok(gaps_s: list[float], base_s: float, jitter: float) -> bool:
    """Each gap between receives is the backoff of the previous attempt: base * 2^(n-1) +- jitter, to
    whole seconds (SQS visibility), plus the worker's poll and processing (up to 1.5 s)."""
    for n, gap in enumerate(gaps_s, start=1):
        nominal = base_s * 2 ** (n - 1)
        if not (round(nominal * (1 - jitter)) - 0.6 <= gap <= round(nominal * (1 + jitter)) + 1.5):
            return False
    return True


async def poison_message(profile: Profile, log_dir: Path, aws_endpoint: str | None = None) -> Outcome:
    run = _run_id()
    backoff = {"BACKOFF_BASE_S": str(profile.poison_backoff_base_s), "BACKOFF_MAX_S": "300",
               # A single poison message must not open the circuit for everyone else.
               "BREAKER_MIN_CALLS": "10"}
    with System(log_dir / "3-poison", env_overrides=backoff, aws_endpoint=aws_endpoint,
                queue_visibility_s=60, llm_profile=dict(profile.llm_profile)) as system:
        ledger = Ledger()
        [client, good] = await _clients(system, ledger, 2, "poison")
        text = f"{POISON_MARKER} {run} always fails"
        sent = await client.send_message(text)
        good_sent = await good.send_message(f"poison neighbour {run}")
        deadline = time.monotonic() + 2 * profile.poison_backoff_base_s * 16 + 30
        while not sent.errors and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await settle(system, ledger, 10)
        attempts = sorted(system.llm_served()["attempts"].get(text, []))
        gaps = [round(b - a, 2) for a, b in zip(attempts, attempts[1:])]
        dlq_depth = system.queue_depth(system.settings.jobs_dlq_url)["ApproximateNumberOfMessages"]
        # (The tally stops the worker, so the redriven message stays in the jobs queue where we can see it.)
        outcome = account("3 poison message -> DLQ -> redrive", system, ledger)
        env = {**os.environ, **system.env}
        redrive = subprocess.run([sys.executable, "-m", "cloudia.dlq", "redrive", "--apply",
                                  "--journal", str(log_dir / "3-poison" / "redrive-journal")],
                                 cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        dlq_after = system.queue_depth(system.settings.jobs_dlq_url)
        returned = []
        for _ in range(5):
            for message in system.sqs.receive_message(QueueUrl=system.settings.jobs_queue_url,
                                                      MaxNumberOfMessages=10, VisibilityTimeout=0,
                                                      WaitTimeSeconds=1).get("Messages", []):
                returned.append(json.loads(message["Body"]).get("job_id"))
            if sent.job_id in returned:
                break
        outcome.figures.update({
            "backoff base (s)": profile.poison_backoff_base_s,
            "LLM attempts (receives)": len(attempts),
            "gaps between receives (s)": gaps,
            "DLQ ApproximateNumberOfMessagesVisible": dlq_depth,
            "redrive tool": (f"exit {redrive.returncode}: "
                             f"{redrive.stdout.strip().splitlines()[-1:] or redrive.stderr[-300:]}"),
            "DLQ after redrive": dlq_after,
        })
        outcome.checks["the poison job was received exactly 5 times"] = len(attempts) == 5
        base_s = profile.poison_backoff_base_s
        outcome.checks[f"receives followed the {base_s:g}/{2 * base_s:g}/{4 * base_s:g}... s backoff"] = (
            poison_schedule_ok(gaps, base_s, 0.2))
        outcome.checks["its user was told (error event)"] = bool(sent.errors)
        outcome.checks["DLQ alarm condition holds (visible >= 1, the alarm's threshold)"] = dlq_depth >= 1
        outcome.checks["redrive tool exited 0"] = redrive.returncode == 0
        outcome.checks["DLQ empty after the redrive"] = dlq_after["ApproximateNumberOfMessages"] == 0
        outcome.checks["the poison job is back in the jobs queue"] = sent.job_id in returned
        outcome.checks["its neighbour was answered"] = bool(good_sent.answers)
        return outcome


# -- 4. a fuzzer through the gateway while good clients chat -------------------------------------------
async def bad_input(profile: Profile, log_dir: Path, aws_endpoint: str | None = None) -> Outcome:
    run = _run_id()
    with System(log_dir / "4-fuzz", aws_endpoint=aws_endpoint, llm_profile=dict(profile.llm_profile)) as system:
        ledger = Ledger()
        good = await _clients(system, ledger, GOOD_CLIENTS, "good")
        fuzzers = await _clients(system, Ledger(), profile.fuzz_connections, "fuzzer")
        rng = random.Random(20251125)
        frames = [fuzz.malformed_frame(rng) for _ in range(profile.fuzz_frames)]
        share = [frames[i::len(fuzzers)] for i in range(len(fuzzers))]
        results = {"error": 0, "other": 0, "missing": 0}
        others: list = []
        unanswered: list = []  # the windows of frames some of which got no reply
        done = asyncio.Event()

        async def fuzz_one(client: ChatClient, mine: list) -> None:
            for start in range(0, len(mine), FUZZ_WINDOW):
                window = mine[start:start + FUZZ_WINDOW]
                replies = await client.pipeline(window, FUZZ_REPLY_TIMEOUT_S)
                for reply in replies:
                    if reply is None:
                        results["missing"] += 1
                    elif reply.get("event") == "error":
                        results["error"] += 1
                    else:
                        results["other"] += 1
                        others.append(reply)
                if None in replies:
                    unanswered.extend(f[:80] if isinstance(f, (str, bytes)) else f for f in window)
                    await client.reconnect()

        async def oversized() -> dict:
            seen = {"error_then_closed": 0, "other": 0}
            for n in range(profile.fuzz_oversized):
                client = ChatClient(system.ws_url, lambda: system.token("fuzzer-big"), "fuzzer-big", Ledger())
                await client.connect()
                reply = await client.request("x" * (fuzz.MAX_FRAME_BYTES + 1 + n), timeout_s=15)
                closed = await client.request("{}", timeout_s=5) is None
                seen["error_then_closed" if reply and reply.get("event") == "error" and closed else "other"] += 1
                await client.close()
            return seen

        async def chat_meanwhile(client: ChatClient) -> None:
            n = 0
            while not done.is_set():
                await client.send_message(f"fuzz neighbour {run} {client.user} #{n}")
                n += 1
                await asyncio.sleep(GOOD_CLIENT_INTERVAL_S)

        chatting = [asyncio.create_task(chat_meanwhile(c)) for c in good]
        started = time.time()
        big, *_ = await asyncio.gather(oversized(), *(fuzz_one(c, m) for c, m in zip(fuzzers, share)))
        fuzz_s = time.time() - started
        done.set()
        await asyncio.gather(*chatting)
        settled = await settle(system, ledger, 60)
        await _close(good + fuzzers)
        still_up = system.alive("gateway") and system.alive("worker")
        outcome = account("4 bad input through the gateway", system, ledger)
        outcome.figures.update({
            "malformed frames sent": len(frames),
            "answered with an error event": results["error"],
            "answered otherwise": results["other"],
            "no answer": results["missing"],
            "oversized frames (error, then close 1009)": big,
            "fuzzing took (s)": round(fuzz_s, 1),
            "frames per second": round(len(frames) / fuzz_s, 1),
            "good messages during the fuzzing (the table above)": len(ledger.sent),
        })
        outcome.checks["every malformed frame answered with an error event"] = (
            results["error"] == len(frames) and not results["other"] and not results["missing"])
        outcome.checks["every oversized frame got an error, then the close"] = big["other"] == 0
        outcome.checks["gateway and worker still up"] = still_up
        outcome.checks["good clients served meanwhile (all answered)"] = (
            settled and len(ledger.sent) > 0 and all(s.accepted and s.answers for s in ledger.sent))
        for reply in others[:5]:
            outcome.notes.append(f"non-error reply to a malformed frame: {reply}")
        if unanswered:
            outcome.notes.append(f"{len(unanswered)} frames were in windows with an unanswered one, e.g. "
                                 f"{sorted(unanswered, key=len, reverse=True)[:1]!r}")
        return outcome


Scenario = Callable[..., Coroutine[Any, Any, Outcome]]  # (profile, log_dir, aws_endpoint=...) -> its outcome
SCENARIOS: dict[int, Scenario] = {1: load_under_faults, 2: llm_outage, 3: poison_message, 4: bad_input}
