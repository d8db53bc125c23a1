"""sendMessage: a valid message becomes exactly one queued job; everything else gets an error event."""
from __future__ import annotations

import dataclasses
import json
import socket
import time

import pytest

from cloudia import limits
from cloudia.frames import MAX_FRAME_BYTES
from cloudia.jobs import QUEUED
from cloudia.schema import IDEMPOTENCY_KEY_PREFIX, budget_key
from tests.functions.conftest import body_of
from tests.support.servers import free_port

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

# A controlled error must come within Redis' 500 ms bound; the margin absorbs a slow test machine.
REDIS_DOWN_ANSWER_BOUND_S = 1.5


def frame(message: str = "Olá, tudo bem?", client_message_id: str = "m-1", conversation_id: str = "conv-1"):
    return {"action": "sendMessage", "conversationId": conversation_id,
            "clientMessageId": client_message_id, "message": message}


def away_from_a_minute_boundary() -> None:
    """The rate limit counts per UTC minute: start a short burst where the minute will not turn."""
    into_minute_s = time.time() % 60
    if into_minute_s > 57:
        time.sleep(60 - into_minute_s + 0.05)


def emitted_metrics(captured_stdout: str) -> list[dict]:
    records = []
    for line in captured_stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            records.append(json.loads(line))
    return records


def test_a_valid_message_is_stored_recorded_queued_and_answered_with_its_job_id(functions):
    # GIVEN alice connected
    connection = functions.open_connection("alice")
    # WHEN she sends a message
    response = functions.send(connection, frame("Olá, tudo bem?"))
    # THEN she hears `queued` with a jobId and her clientMessageId
    assert response["statusCode"] == 200
    event = body_of(response)
    assert event["event"] == "queued" and event["clientMessageId"] == "m-1"
    job_id = event["jobId"]
    # AND the job is on the queue with the whole message
    [job] = functions.queued_jobs()
    assert job["job_id"] == job_id
    assert (job["user_id"], job["conversation_id"], job["client_message_id"], job["message"]) == (
        "alice", "conv-1", "m-1", "Olá, tudo bem?")
    # AND the job row is queued, and the message is in her history as a user entry
    [row] = functions.job_rows()
    assert (row["jobId"], row["status"], row["userId"]) == (job_id, QUEUED, "alice")
    [entry] = functions.service.history.since("alice", "conv-1")
    assert (entry.job_id, entry.role, entry.message) == (job_id, "user", "Olá, tudo bem?")


def test_a_resend_of_the_same_client_message_id_gets_the_same_job_and_no_second_job(functions):
    # GIVEN a message already queued
    first = functions.open_connection("alice")
    job_id = body_of(functions.send(first, frame(client_message_id="m-42")))["jobId"]
    # WHEN the client reconnects and sends it again with the same clientMessageId
    second = functions.open_connection("alice")
    response = functions.send(second, frame(client_message_id="m-42"))
    # THEN it hears the same jobId, and there is still one job, one queue message, one history entry
    assert response["statusCode"] == 200
    assert body_of(response)["jobId"] == job_id
    assert [j["job_id"] for j in functions.queued_jobs()] == [job_id]
    assert [r["jobId"] for r in functions.job_rows()] == [job_id]
    assert len(functions.history_rows()) == 1


def test_the_same_client_message_id_from_another_user_is_another_job(functions):
    alice, bob = functions.open_connection("alice"), functions.open_connection("bob")
    job_a = body_of(functions.send(alice, frame(client_message_id="m-1")))["jobId"]
    job_b = body_of(functions.send(bob, frame(client_message_id="m-1")))["jobId"]
    assert job_a != job_b
    assert sorted(j["user_id"] for j in functions.queued_jobs()) == ["alice", "bob"]


def test_a_client_message_id_reused_for_another_text_is_refused(functions):
    connection = functions.open_connection("alice")
    functions.send(connection, frame("first text", client_message_id="m-7"))
    response = functions.send(connection, frame("a different text", client_message_id="m-7"))
    assert response["statusCode"] == 409
    assert body_of(response)["reason"] == "client_message_id_reused"
    assert len(functions.queued_jobs()) == 1


def test_over_the_rate_limit_a_message_is_refused_and_not_queued(functions_with, settings, capsys):
    # GIVEN a limit of 3 messages a minute
    functions = functions_with(resilience=dataclasses.replace(settings.resilience, rate_limit_per_minute=3))
    connection = functions.open_connection("alice")
    away_from_a_minute_boundary()
    # WHEN alice sends 4 different messages within the minute
    responses = [functions.send(connection, frame(client_message_id=f"m-{i}")) for i in range(4)]
    # THEN the 4th is refused with `rate_limited`, and only 3 jobs exist
    assert [r["statusCode"] for r in responses] == [200, 200, 200, 429]
    assert body_of(responses[3])["reason"] == "rate_limited"
    assert body_of(responses[3])["clientMessageId"] == "m-3"  # the client can match the refusal exactly
    assert len(functions.queued_jobs()) == 3
    # AND the refusal is counted with its reason
    rejected = [m for m in emitted_metrics(capsys.readouterr().out) if "MessagesRejected" in m and "reason" in m]
    assert [m["reason"] for m in rejected] == ["rate_limited"]


def test_over_the_daily_token_budget_a_message_is_refused_and_counted(functions_with, settings, capsys):
    # GIVEN a budget of 2,000 tokens a day, of which the worker already charged enough for answers that
    # less is left than a call with a 40-character message can cost (but as much as one with 20)
    functions = functions_with(resilience=dataclasses.replace(settings.resilience, daily_token_budget=2000))
    connection = functions.open_connection("alice")
    max_tokens = settings.resilience.llm_max_tokens
    left = (limits.call_tokens(["x" * 40], max_tokens) + limits.call_tokens(["x" * 20], max_tokens)) // 2
    limits.charge_tokens(functions.redis, "alice", 2000 - left)
    # WHEN alice sends the 40-character message
    response = functions.send(connection, frame("x" * 40))
    # THEN it is refused with `budget_exceeded`, nothing is queued, and the refusal is counted
    assert response["statusCode"] == 429
    assert body_of(response)["reason"] == "budget_exceeded"
    assert functions.queued_jobs() == []
    metrics = emitted_metrics(capsys.readouterr().out)
    assert any(m.get("BudgetRefusals") == [1.0] for m in metrics)
    assert any("MessagesRejected" in m and m.get("reason") == "budget_exceeded" for m in metrics)
    # AND a message that fits the rest of the budget still goes through
    assert functions.send(connection, frame("x" * 20, client_message_id="m-small"))["statusCode"] == 200


def test_an_accepted_message_reserves_the_most_its_call_can_cost_on_the_day(functions):
    # 400 bytes are at most 200 tokens, plus the chat format's, plus the answer's cap
    connection = functions.open_connection("alice")
    functions.send(connection, frame("x" * 400))
    day = time.strftime("%Y-%m-%d", time.gmtime())
    max_tokens = functions.settings.resilience.llm_max_tokens
    assert int(functions.redis.get(budget_key("alice", day))) == limits.call_tokens(["x" * 400], max_tokens) == (
        limits.CALL_OVERHEAD_TOKENS + 200 + limits.MESSAGE_OVERHEAD_TOKENS + max_tokens)


MALFORMED = {
    "empty body": ("", "empty_frame"),
    "not JSON": ("{action: sendMessage", "malformed_json"),
    "a JSON array": ("[1, 2]", "not_an_object"),
    "no action": (json.dumps({"message": "hi"}), "missing_action"),
    "unknown action": (json.dumps({**frame(), "action": "dance"}), "unknown_action"),
    "another route's action": (json.dumps({"action": "ping"}), "unexpected_action"),
    "no conversationId": (json.dumps({k: v for k, v in frame().items() if k != "conversationId"}), "missing_field"),
    "no clientMessageId": (json.dumps({k: v for k, v in frame().items() if k != "clientMessageId"}), "missing_field"),
    "no message": (json.dumps({k: v for k, v in frame().items() if k != "message"}), "missing_field"),
    "message is a number": (json.dumps({**frame(), "message": 42}), "invalid_field"),
    "empty message": (json.dumps(frame("")), "invalid_field"),
    "blank message": (json.dumps(frame(" \n\t ")), "empty_message"),
    "message with a control character": (json.dumps(frame("hi\x00there")), "not_text"),
    "message over the limit": (json.dumps(frame("a" * 8001)), "message_too_long"),
    "conversationId with '#'": (json.dumps(frame(conversation_id="a#b")), "invalid_field"),
    "clientMessageId over 128 chars": (json.dumps(frame(client_message_id="m" * 129)), "invalid_field"),
    "frame over 32 KB": (json.dumps(frame("a" * (MAX_FRAME_BYTES + 1))), "frame_too_large"),
}


@pytest.mark.parametrize("body, reason", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_frame_gets_an_error_event_that_says_why(functions, body, reason):
    connection = functions.open_connection("alice")
    response = functions.send(connection, body)
    assert response["statusCode"] == 400
    event = body_of(response)
    assert event["event"] == "error" and event["reason"] == reason and event["message"]
    assert functions.queued_jobs() == []


def test_a_binary_frame_is_refused_as_not_text(functions):
    connection = functions.open_connection("alice")
    response = functions.send(connection, "AAEC", base64=True)
    assert response["statusCode"] == 400
    assert body_of(response)["reason"] == "not_text"


def test_a_message_from_an_unregistered_connection_is_refused(functions):
    response = functions.send("never-connected=", frame())
    assert response["statusCode"] == 401
    assert body_of(response)["reason"] == "unauthenticated"
    assert functions.queued_jobs() == []


def test_with_redis_stopped_the_sender_gets_a_controlled_error_within_the_bound(functions_with, own_redis):
    # GIVEN alice connected, then Redis dies
    functions = functions_with(redis_url=own_redis.url)
    connection = functions.open_connection("alice")
    own_redis.stop()
    # WHEN she sends a message
    started = time.monotonic()
    response = functions.send(connection, frame())
    elapsed_s = time.monotonic() - started
    # THEN she hears a controlled error at once, and nothing was queued
    assert response["statusCode"] == 503
    assert body_of(response)["reason"] == "session_store_unavailable"
    assert elapsed_s < REDIS_DOWN_ANSWER_BOUND_S
    assert functions.queued_jobs() == []


@pytest.fixture
def silent_redis():
    """A socket that accepts connections (kernel backlog) and never answers: a hung Redis."""
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen(16)
        yield f"redis://127.0.0.1:{port}/0"


def test_with_redis_hanging_the_sender_gets_a_controlled_error_within_the_bound(functions_with, silent_redis):
    # GIVEN a Redis that accepts the connection and never answers
    functions = functions_with(redis_url=silent_redis)
    # WHEN a message arrives (the connection lookup is the first Redis call)
    started = time.monotonic()
    response = functions.send("conn-h=", frame(), authorizer={"userId": "alice"})
    elapsed_s = time.monotonic() - started
    # THEN the 500 ms Redis bound turns into a controlled error; nothing hangs
    assert response["statusCode"] == 503
    assert body_of(response)["reason"] == "session_store_unavailable"
    assert elapsed_s < REDIS_DOWN_ANSWER_BOUND_S


def test_when_the_enqueue_fails_the_user_is_told_and_no_job_is_left_half_written(functions):
    # GIVEN alice connected, and the jobs queue gone
    connection = functions.open_connection("alice")
    queue_name = functions.settings.jobs_queue_url.rsplit("/", 1)[1]
    functions.sqs.delete_queue(QueueUrl=functions.settings.jobs_queue_url)
    # WHEN she sends a message
    response = functions.send(connection, frame(client_message_id="m-9"))
    # THEN she is told it was not queued
    assert response["statusCode"] == 503
    assert body_of(response)["reason"] == "enqueue_failed"
    # AND nothing is left half written: no job row, her entry left the history, her tokens came back
    assert functions.job_rows() == []
    assert functions.history_rows() == []
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert int(functions.redis.get(budget_key("alice", day))) == 0
    # AND the failure was not remembered as the answer: once the queue is back, a resend is queued,
    # its job and entry written again
    functions.sqs.create_queue(QueueName=queue_name)
    retry = functions.send(connection, frame(client_message_id="m-9"))
    assert retry["statusCode"] == 200
    job_id = body_of(retry)["jobId"]
    assert [j["job_id"] for j in functions.queued_jobs()] == [job_id]
    assert [(r["jobId"], r["status"]) for r in functions.job_rows()] == [(job_id, QUEUED)]
    assert len(functions.history_rows()) == 1


def test_a_sender_hears_at_once_that_the_llm_circuit_is_open_and_the_job_is_kept(functions):
    from cloudia.breaker import CircuitBreaker
    from cloudia.protocol import CIRCUIT_OPEN_MESSAGE

    # GIVEN a worker's breaker (sharing this Redis) opened by failing LLM calls
    breaker = CircuitBreaker(functions.redis, functions.settings.resilience)
    for _ in range(functions.settings.resilience.breaker_min_calls):
        breaker.record(breaker.acquire(), succeeded=False, timing=None)
    connection = functions.open_connection("alice")
    # WHEN alice sends a message
    event = body_of(functions.send(connection, frame("are you there?")))
    # THEN she gets the circuit-breaker event for her job at once
    assert event["event"] == "error" and event["message"] == CIRCUIT_OPEN_MESSAGE
    assert event["reason"] == "circuit_open" and event["clientMessageId"] == "m-1"
    # AND the job is kept on the queue for when the circuit closes
    [job] = functions.queued_jobs()
    assert job["job_id"] == event["jobId"]


def test_a_resend_whose_idempotency_record_was_lost_meets_its_job_and_makes_no_second_one(functions):
    # GIVEN a message accepted, then Redis lost its idempotency record (a restart without persistence)
    connection = functions.open_connection("alice")
    job_id = body_of(functions.send(connection, frame(client_message_id="m-7")))["jobId"]
    for key in functions.redis.scan_iter(f"{IDEMPOTENCY_KEY_PREFIX}#*"):
        functions.redis.delete(key)
    # WHEN the client sends it again
    again = functions.send(connection, frame(client_message_id="m-7"))
    # THEN it hears the same job, and there is still one job row and one history entry; the job,
    # still queued, is queued once more (a copy its lease and state answer once)
    assert again["statusCode"] == 200 and body_of(again)["jobId"] == job_id
    assert [r["jobId"] for r in functions.job_rows()] == [job_id]
    assert len(functions.history_rows()) == 1
    assert {j["job_id"] for j in functions.queued_jobs()} == {job_id}
