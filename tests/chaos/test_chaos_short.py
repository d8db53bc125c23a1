"""The short form of each chaos scenario (`python -m chaos --short`), against real processes: the
gateway, the worker and the fake LLM as child processes, a redis-server restarted for real, the worker
killed with SIGKILL, faults injected through the fake LLM's `/_faults`.

Each test prints the scenario's table (visible with `pytest -s` or on failure)."""
from __future__ import annotations

import asyncio
import statistics

import pytest

from chaos import scenarios
from chaos.accounting import render

pytestmark = pytest.mark.timeout(240)


def run(scenario, tmp_path, aws_env, **kwargs):
    outcome = asyncio.run(scenario(scenarios.SHORT, tmp_path, aws_endpoint=aws_env, **kwargs))
    print(render(outcome))
    return outcome


def test_load_under_llm_faults_worker_kills_and_redis_restart_loses_nothing(tmp_path, aws_env):
    """GIVEN the fake LLM failing 20 % (503), timing out 5 % and throttling 5 % (429 + Retry-After)
    WHEN 160 messages come from 20 WebSocket clients while the worker is SIGKILLed twice (and restarted)
    and Redis is restarted once
    THEN every accepted message is answered or in the DLQ with its user told, none is lost, none gets two
    different answers and none a worker had kept is paid twice (a call a SIGKILL cut short is called
    again once; an answer the provider had finished is stored from the text the worker kept; an answer
    the killed worker had not kept yet, its end unread in the socket or not yet in Redis, is a cut call
    to it, one of the recalls)."""
    timeline = tmp_path / "timeline.json"
    outcome = run(scenarios.load_under_faults, tmp_path, aws_env, timeline_path=timeline)

    assert outcome.sent == scenarios.SHORT.load_messages
    assert outcome.accepted == outcome.sent - outcome.refused and outcome.accepted > 0.9 * outcome.sent
    assert outcome.lost == 0, outcome.lost_jobs
    assert outcome.answered + outcome.dlq_told == outcome.accepted
    assert outcome.two_answers == 0, outcome.duplicated_jobs
    # The ledger behind "charged twice" saw every answer (an empty ledger would find no duplicate).
    # (An answer finished just as its worker was killed is stored from the text the worker kept: the
    # fake may have seen its client leave before the stream's last frame, and not counted it.)
    kept = outcome.figures["answers finished just before a kill, kept and not paid again"]
    assert outcome.figures["completions in the fake LLM's ledger"] >= outcome.answered - kept
    # The log behind "a worker kept it" saw every answer (else a double charge would pass as unkept), but
    # for one kept just before its worker's kill, which may have come before the log line.
    assert outcome.figures["whole answers the workers kept (their logs)"] >= outcome.answered - kept
    assert outcome.charged_twice == 0, outcome.duplicated_jobs
    assert all(outcome.checks.values()), outcome.checks
    assert outcome.figures["worker restarts"] == scenarios.SHORT.load_worker_kills
    assert timeline.exists()


def test_llm_outage_fails_fast_spares_the_llm_and_answers_every_kept_job_after(tmp_path, aws_env):
    """GIVEN clients chatting
    WHEN the LLM goes down for ~5 s (every connection reset) and comes back
    THEN the breaker opens, the sender hears the circuit error at once (median under half a second), the LLM
    sees fewer calls than messages sent in the outage (without the breaker each would cost up to 5),
    and every job kept during the outage is answered after it."""
    outcome = run(scenarios.llm_outage, tmp_path, aws_env)
    raw = outcome.figures["_raw"]

    assert outcome.ok, render(outcome)
    assert raw["held"] > 0, "the breaker never opened"
    # "Within milliseconds": tens of ms typically; the bounds leave room for a loaded machine.
    assert statistics.median(raw["fail_fast_s"]) < 0.5
    assert max(raw["fail_fast_s"]) < 2.0
    assert raw["calls_during"] < raw["during"]
    assert outcome.answered == outcome.accepted


def test_poison_message_reaches_the_dlq_after_5_receives_and_the_redrive_tool_returns_it(tmp_path, aws_env):
    """GIVEN a message the LLM refuses (503) on every attempt
    WHEN it is sent
    THEN it is received exactly 5 times on the backoff schedule (1/2/4/8 s with the short base), lands in
    the DLQ with its user told (the DLQ alarm's condition holds), and `python -m cloudia.dlq redrive
    --apply` moves it back to the jobs queue."""
    outcome = run(scenarios.poison_message, tmp_path, aws_env)

    assert outcome.ok, render(outcome)
    assert outcome.figures["LLM attempts (receives)"] == 5
    assert outcome.dlq_told == 1


def test_fuzzed_frames_each_get_an_error_event_while_good_clients_are_served(tmp_path, aws_env):
    """GIVEN good clients chatting
    WHEN a fuzzer sends ~1,000 malformed frames (binary, not JSON, not objects, bad actions and fields,
    deep nesting, truncated) and a few oversized ones through the gateway
    THEN every frame is answered with an `error` event, nothing crashes, and every good message is answered."""
    outcome = run(scenarios.bad_input, tmp_path, aws_env)

    assert outcome.figures["malformed frames sent"] == scenarios.SHORT.fuzz_frames
    assert outcome.accepted >= scenarios.GOOD_CLIENTS  # good messages went through during the fuzzing
    assert outcome.ok, render(outcome)
