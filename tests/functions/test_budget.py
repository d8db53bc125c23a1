"""The daily token budget holds: admitting a message reserves the most its LLM call can cost (the
context the worker will send, the message, and `llm_max_tokens` back), atomically, so neither a burst
in one conversation nor concurrent admissions can take a user past the limit; `queued` and the
refusal tell the user what is left and when it resets."""
from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from cloudia import limits
from cloudia.frames import SendMessage
from cloudia.schema import budget_hold_key, budget_key
from tests.functions.conftest import body_of

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

# A maximum-size message (8,000 characters) whose tokens are known without a tokenizer: " a" is one
# token of cl100k_base and o200k_base (4,000 of them), and one word for the fake LLM.
BIG = "a " * 4000
BIG_TOKENS = 4000


def frame(message: str, client_message_id: str, conversation_id: str = "conv-1") -> dict:
    return {"action": "sendMessage", "conversationId": conversation_id,
            "clientMessageId": client_message_id, "message": message}


def next_midnight_s() -> int:
    return (int(time.time()) // 86400 + 1) * 86400


def away_from_the_turns(minute_margin_s: float = 10.0) -> None:
    """The rate limit counts per UTC minute and the budget per UTC day: start where neither turns."""
    if next_midnight_s() - time.time() < 60:
        time.sleep(next_midnight_s() - time.time() + 0.1)
    into_minute_s = time.time() % 60
    if into_minute_s > 60 - minute_margin_s:
        time.sleep(60 - into_minute_s + 0.05)


def used_today(functions, user_id: str) -> int:
    return int(functions.redis.get(budget_key(user_id, time.strftime("%Y-%m-%d", time.gmtime()))) or 0)


def test_a_burst_of_twenty_maximum_size_messages_in_one_conversation_ends_within_the_budget(functions):
    # GIVEN the default bounds: 50,000 tokens a day, 20 messages a minute, 8,000 characters a message
    res = functions.settings.resilience
    assert (res.daily_token_budget, res.rate_limit_per_minute, res.max_message_chars) == (50_000, 20, 8_000)
    assert len(BIG) == res.max_message_chars
    connection = functions.open_connection("alice")
    away_from_the_turns()

    # WHEN alice sends 20 maximum-size messages in one conversation within the minute
    responses, counter = [], []
    for i in range(20):
        responses.append(functions.send(connection, frame(BIG, f"m-{i}")))
        counter.append(used_today(functions, "alice"))

    # THEN the counter is never above the limit
    assert max(counter) <= res.daily_token_budget, counter
    # AND the first messages are queued, then, once the budget is reached, every one is refused with
    # the reason (none is queued past it)
    statuses = [r["statusCode"] for r in responses]
    admitted = statuses.index(429) if 429 in statuses else len(statuses)
    assert 0 < admitted < 20, statuses
    assert statuses == [200] * admitted + [429] * (20 - admitted)
    assert {body_of(r)["reason"] for r in responses[admitted:]} == {"budget_exceeded"}
    assert len(functions.queued_jobs()) == admitted
    # AND what was reserved covers what the admitted calls can cost: the k-th sends the k messages of
    # the conversation so far (the earlier ones are its context) and can get `llm_max_tokens` back
    most_they_can_cost = sum(BIG_TOKENS * k + res.llm_max_tokens for k in range(1, admitted + 1))
    assert most_they_can_cost <= counter[-1] <= res.daily_token_budget
    # AND each refusal says what is left and when the budget resets
    refusal = body_of(responses[-1])
    assert refusal["budget"] == {"remaining": res.daily_token_budget - counter[-1],
                                 "limit": res.daily_token_budget, "resetsAt": next_midnight_s()}
    assert refusal["clientMessageId"] == "m-19"
    assert 0 < refusal["retryAfter"] <= 86400
    assert "resets at 00:00 UTC" in refusal["message"]


@pytest.mark.filterwarnings("ignore:Couldn't determine the remaining time left")  # no Lambda context here
def test_concurrent_admissions_cannot_pass_the_budget(functions_with, settings):
    # GIVEN the default budget of 50,000 tokens and no rate limit in the way
    functions = functions_with(resilience=dataclasses.replace(settings.resilience, rate_limit_per_minute=1000))
    res = functions.settings.resilience
    service = functions.service
    away_from_the_turns()
    # WHEN 24 maximum-size messages, each opening a conversation, are admitted at once from 24 threads
    start = threading.Barrier(24)
    outcomes: list[str] = []

    def send(i: int) -> None:
        message = SendMessage.model_validate(frame(BIG, f"m-{i}", conversation_id=f"conv-{i}"))
        start.wait()
        try:
            service.send_message("alice", message)
            outcomes.append("queued")
        except limits.BudgetExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # THEN the counter stays within the limit, and no more calls were admitted than the budget pays for
    # (each sends 4,000 tokens and can get `llm_max_tokens` back)
    assert len(outcomes) == 24
    admitted = outcomes.count("queued")
    assert used_today(functions, "alice") <= res.daily_token_budget
    assert admitted * (BIG_TOKENS + res.llm_max_tokens) <= res.daily_token_budget
    reservation = limits.call_tokens([BIG], res.llm_max_tokens)
    assert admitted == res.daily_token_budget // reservation
    assert used_today(functions, "alice") == admitted * reservation
    assert len(functions.queued_jobs()) == admitted


def test_queued_carries_what_is_left_of_the_budget_and_when_it_resets(functions):
    # GIVEN alice connected, nothing spent today
    res = functions.settings.resilience
    connection = functions.open_connection("alice")
    away_from_the_turns()
    # WHEN she sends a message, then another in the same conversation
    first = body_of(functions.send(connection, frame("Olá, tudo bem?", "m-1")))
    second = body_of(functions.send(connection, frame("E o orçamento?", "m-2")))
    # THEN each `queued` says what is left once that message's reservation is taken, and the reset
    one = limits.call_tokens(["Olá, tudo bem?"], res.llm_max_tokens)
    two = limits.call_tokens(["Olá, tudo bem?", "E o orçamento?"], res.llm_max_tokens)  # its context too
    assert first["event"] == second["event"] == "queued"
    assert first["budget"] == {"remaining": res.daily_token_budget - one, "limit": res.daily_token_budget,
                               "resetsAt": next_midnight_s()}
    assert second["budget"]["remaining"] == res.daily_token_budget - one - two
    # AND each job holds its reservation until the worker settles it, at most until the reset
    hold = functions.redis.get(budget_hold_key(second["jobId"]))
    assert limits.Hold.parse(hold).tokens == two
    ttl_s = functions.redis.ttl(budget_hold_key(second["jobId"]))
    assert 0 < ttl_s <= next_midnight_s() - time.time() + 2  # rounded up, then by Redis
    # AND a resend of the same message gets the same job without a second reservation
    again = body_of(functions.send(connection, frame("E o orçamento?", "m-2")))
    assert again["jobId"] == second["jobId"]
    assert used_today(functions, "alice") == one + two


def test_the_reservation_counts_the_context_the_worker_will_send_from_the_cache_or_the_history(functions):
    from cloudia.context_cache import ContextCache

    res = functions.settings.resilience
    connection = functions.open_connection("alice")
    away_from_the_turns()
    # GIVEN a conversation whose context the worker cached: more messages than it sends
    cached = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 50, "jobId": f"j{i}"}
              for i in range(25)]
    ContextCache(functions.redis, res.context_ttl_s, res.context_max_messages).put("alice", "conv-c", cached)
    # WHEN a message is sent to it
    queued = body_of(functions.send(connection, frame("and now?", "m-c", conversation_id="conv-c")))
    # THEN the reservation counts the last messages the worker sends (the context it keeps, the first
    # one the user's, with the message last), and the answer's cap
    kept = cached[-res.context_max_messages:][-(res.context_max_messages - 1):]
    while kept[0]["role"] != "user":
        kept.pop(0)
    expected = limits.call_tokens([m["content"] for m in kept] + ["and now?"], res.llm_max_tokens)
    assert limits.Hold.parse(functions.redis.get(budget_hold_key(queued["jobId"]))).tokens == expected
    # AND with a cold cache it reads the same from the history (the message just sent is counted)
    functions.redis.flushall()
    connection = functions.open_connection("alice")
    queued = body_of(functions.send(connection, frame("one more", "m-d", conversation_id="conv-c")))
    expected = limits.call_tokens(["and now?", "one more"], res.llm_max_tokens)
    assert limits.Hold.parse(functions.redis.get(budget_hold_key(queued["jobId"]))).tokens == expected


def test_the_estimate_is_at_least_the_tokens_of_english_and_portuguese_text():
    # The larger of the counts of cl100k_base and o200k_base for these texts, measured offline; with
    # the chat format's tokens of a message, the estimate is never below them (`limits.BYTES_PER_TOKEN`).
    measured = {
        "The budget is a guard against unexpected cost. Every message a person sends is answered by a "
        "large language model, and each answer is paid for by the token.": 32,
        "O orçamento é uma proteção contra custos inesperados. Cada mensagem que uma pessoa envia é "
        "respondida por um grande modelo de linguagem, e cada resposta é paga por token.": 43,
        "Ação, coração, não, pão, avós, Conceição, açúcar.": 21,
        "Olá, tudo bem?": 6,
        BIG: 4001,
    }
    for text, tokens in measured.items():
        assert limits.estimate_tokens(text) + limits.MESSAGE_OVERHEAD_TOKENS >= tokens, text
